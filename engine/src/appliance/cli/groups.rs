//! `flint fs group create|list|delete|assign`: filesystem groups over the
//! management API.

use serde_json::json;

use super::{need, no_more, print, s, table, value, Api};

/// Runs `fs group SUB ...`.
pub(super) fn command(api: &Api, json_out: bool, mut args: Vec<String>) -> Result<(), String> {
    let sub = need(&mut args, "fs group", "create, list, delete or assign")?;
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
            let name = need(&mut args, "fs group", "a group NAME")?;
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
            let name = need(&mut args, "fs group", "a group NAME")?;
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
            let fs = need(&mut args, "fs group", "a file system FS")?;
            let group = need(&mut args, "fs group", "a GROUP (or --none)")?;
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
