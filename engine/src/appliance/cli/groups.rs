//! `flint fs group create|list|delete|assign`: filesystem groups over the
//! management API.

use serde_json::{json, Value};

use super::{no_more, s, table, value, Api};

/// Runs `fs group SUB ...`.
pub(super) fn command(api: &Api, json_out: bool, mut args: Vec<String>) -> Result<(), String> {
    let mut next = |what: &str| -> Result<String, String> {
        if args.is_empty() {
            return Err(format!("fs group needs {what}"));
        }
        Ok(args.remove(0))
    };
    let sub = next("create, list, delete or assign")?;
    let print = |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match sub.as_str() {
        "list" => {
            no_more(&args)?;
            let v = api.call("GET", "/v1/groups", None)?;
            if json_out {
                print(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|g| {
                    let members: Vec<String> = g["filesystems"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(s)
                        .collect();
                    vec![s(&g["name"]), s(&g["org"]), members.join(",")]
                })
                .collect();
            table(&["name", "org", "filesystems"], rows);
            Ok(())
        }
        "create" => {
            let name = next("a group NAME")?;
            let org = value(&mut args, "--org")?;
            no_more(&args)?;
            let v = api.call(
                "POST",
                "/v1/groups",
                Some(json!({"name": name, "org": org})),
            )?;
            if json_out {
                print(&v);
            } else {
                println!("filesystem group {name} created");
            }
            Ok(())
        }
        "delete" => {
            let name = next("a group NAME")?;
            no_more(&args)?;
            let v = api.call("DELETE", &format!("/v1/groups/{name}"), None)?;
            if json_out {
                print(&v);
            } else {
                println!("filesystem group {name} deleted");
            }
            Ok(())
        }
        "assign" => {
            let fs = next("a file system FS")?;
            let group = next("a GROUP (or --none)")?;
            let group = (group != "--none").then_some(group);
            no_more(&args)?;
            let v = api.call(
                "POST",
                &format!("/v1/fs/{fs}/group"),
                Some(json!({ "group": group })),
            )?;
            if json_out {
                print(&v);
            } else {
                match group {
                    Some(g) => println!("file system {fs} is in group {g}"),
                    None => println!("file system {fs} is in no group"),
                }
            }
            Ok(())
        }
        other => Err(format!(
            "fs group {other}: expected create, list, delete or assign"
        )),
    }
}
