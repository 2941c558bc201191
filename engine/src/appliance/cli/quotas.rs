//! `flint fs quota set|list|unset`: a file system's directory quotas over
//! the management API.

use serde_json::{json, Value};

use super::{bytes, need, no_more, print, s, table, value, Api};

/// A limit as the table shows it: the size, or `-` for none.
fn limit(v: &Value) -> String {
    match v.as_u64() {
        None | Some(0) => "-".into(),
        Some(_) => bytes(v),
    }
}

/// Runs `fs quota SUB ...`.
pub(super) fn command(api: &Api, json_out: bool, mut args: Vec<String>) -> Result<(), String> {
    let sub = need(&mut args, "fs quota", "set, list or unset")?;
    let fs = need(&mut args, "fs quota", "a file system name")?;
    let base = format!("/v1/fs/{fs}/quotas");
    match sub.as_str() {
        "list" => {
            no_more(&args)?;
            let v = api.call("GET", &base, None)?;
            if json_out {
                print(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|q| {
                    let state = match q["state"].as_str() {
                        Some("enforcing") if q["in_grace"].as_bool() == Some(true) => {
                            "over soft (grace)".to_string()
                        }
                        Some("counting") => format!("counting ({} scanned)", s(&q["scanned"])),
                        other => other.unwrap_or("?").to_string(),
                    };
                    vec![
                        s(&q["path"]),
                        bytes(&q["used"]),
                        limit(&q["hard"]),
                        limit(&q["soft"]),
                        format!("{}s", s(&q["grace_secs"])),
                        state,
                    ]
                })
                .collect();
            table(&["path", "used", "hard", "soft", "grace", "state"], rows);
            Ok(())
        }
        "set" => {
            let path = need(&mut args, "fs quota", "a directory PATH")?;
            let hard = value(&mut args, "--hard")?;
            let soft = value(&mut args, "--soft")?;
            let grace = value(&mut args, "--grace")?;
            no_more(&args)?;
            if hard.is_none() && soft.is_none() {
                return Err("fs quota set needs --hard SIZE or --soft SIZE".into());
            }
            let v = api.call(
                "POST",
                &base,
                Some(json!({"path": path, "hard": hard, "soft": soft, "grace": grace})),
            )?;
            if json_out {
                print(&v);
            } else {
                println!(
                    "quota on {} of {fs}: hard {}, soft {} ({})",
                    s(&v["path"]),
                    limit(&v["hard"]),
                    limit(&v["soft"]),
                    if v["state"].as_str() == Some("counting") {
                        "counting its contents; enforced once counted"
                    } else {
                        "enforced"
                    }
                );
            }
            Ok(())
        }
        "unset" => {
            let path = need(&mut args, "fs quota", "a directory PATH")?;
            no_more(&args)?;
            let v = api.call("DELETE", &base, Some(json!({ "path": path })))?;
            if json_out {
                print(&v);
            } else {
                println!("quota on {} of {fs} unset", s(&v["unset"]));
            }
            Ok(())
        }
        other => Err(format!("fs quota {other}: expected set, list or unset")),
    }
}
