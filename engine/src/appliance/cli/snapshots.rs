//! `flint fs snapshot create|list|delete|restore`: a file system's
//! snapshots over the management API.

use serde_json::{json, Value};

use super::{bytes, flag, need, no_more, print, s, table, value, Api};

/// Nanoseconds since the epoch as a UTC time of day and date.
fn when(v: &Value) -> String {
    let ns = v.as_i64().unwrap_or(0);
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Runs `fs snapshot SUB ...`.
pub(super) fn command(api: &Api, json_out: bool, mut args: Vec<String>) -> Result<(), String> {
    let sub = need(&mut args, "fs snapshot", "create, list, delete or restore")?;
    let fs = need(&mut args, "fs snapshot", "a file system name")?;
    let base = format!("/v1/fs/{fs}/snapshots");
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
                .map(|x| {
                    vec![
                        s(&x["name"]),
                        when(&x["created_ns"]),
                        bytes(&x["bytes"]),
                        if x["writable"].as_bool() == Some(true) {
                            "-".into()
                        } else {
                            bytes(&x["reclaimable"])
                        },
                        if x["writable"].as_bool() == Some(true) {
                            format!("writable ({})", s(&x["filesystem"]))
                        } else {
                            "read-only".into()
                        },
                    ]
                })
                .collect();
            table(
                &["name", "created (UTC)", "size", "reclaimable", "mode"],
                rows,
            );
            Ok(())
        }
        "create" => {
            let name = need(&mut args, "fs snapshot", "a snapshot NAME")?;
            let writable = flag(&mut args, "--writable");
            no_more(&args)?;
            let v = api.call(
                "POST",
                &base,
                Some(json!({ "name": name, "writable": writable })),
            )?;
            if json_out {
                print(&v);
            } else if writable {
                println!(
                    "writable snapshot {name} of {fs} taken: mount file system {}",
                    s(&v["filesystem"])
                );
            } else {
                println!("snapshot {name} of {fs} taken ({})", bytes(&v["bytes"]));
            }
            Ok(())
        }
        "delete" => {
            let name = need(&mut args, "fs snapshot", "a snapshot NAME")?;
            no_more(&args)?;
            let v = api.call("DELETE", &format!("{base}/{name}"), None)?;
            if json_out {
                print(&v);
            } else if v["writable"].as_bool() == Some(true) {
                println!("writable snapshot {name} of {fs} deleted with file system {fs}@{name}");
            } else {
                println!(
                    "snapshot {name} of {fs} deleted ({} reclaimed)",
                    bytes(&v["reclaimed"])
                );
            }
            Ok(())
        }
        "restore" => {
            let name = need(&mut args, "fs snapshot", "a snapshot NAME")?;
            let keep = value(&mut args, "--keep-current")?;
            no_more(&args)?;
            let v = api.call(
                "POST",
                &format!("{base}/{name}/restore"),
                Some(json!({ "keep_current": keep })),
            )?;
            if json_out {
                print(&v);
            } else {
                match keep {
                    Some(k) => println!("{fs} restored to {name} (its state before: snapshot {k})"),
                    None => println!("{fs} restored to {name}"),
                }
            }
            Ok(())
        }
        other => Err(format!(
            "fs snapshot {other}: expected create, list, delete or restore"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(super::when(&0.into()), "1970-01-01 00:00:00");
        let t: i64 = 1_796_083_200 * 1_000_000_000 + 3_723 * 1_000_000_000;
        assert_eq!(super::when(&t.into()), "2026-12-01 01:02:03");
    }
}
