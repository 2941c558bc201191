//! The management API's filesystem groups: `GET /v1/groups`, `POST
//! /v1/groups {"name", "org"}`, `DELETE /v1/groups/{name}`, and `POST
//! /v1/fs/{name}/group {"group": NAME or null}` to put a file system in
//! one (a group of the organization that owns it).

use serde_json::{json, Value};

use super::events::Level;
use super::mgmt::{body, field, fs_id, store_err, Answer, Node, Req};

/// Answers a request under `/v1/groups/{rest...}`.
pub(super) fn route(node: &Node, req: &Req, rest: &[&str]) -> Answer {
    let e = &node.engine;
    let orgs = e.orgs().map_err(store_err)?;
    let org_name = |id: u32| orgs.iter().find(|o| o.id == id).map(|o| o.name.clone());
    match (req.method.as_str(), rest) {
        ("GET", []) => {
            let fss = e.fs_list().map_err(store_err)?;
            let mut out = Vec::new();
            for g in e.groups().map_err(store_err)? {
                let mut members = Vec::new();
                for (f, _) in &fss {
                    if e.fs_group(f.id)
                        .map_err(store_err)?
                        .is_some_and(|x| x.id == g.id)
                    {
                        members.push(f.name.clone());
                    }
                }
                out.push(json!({"id": g.id, "name": g.name, "org": org_name(g.org),
                                "filesystems": members}));
            }
            Ok((200, Value::Array(out)))
        }
        ("POST", []) => {
            let b = body(req)?;
            let name = field(&b, "name")?
                .as_str()
                .ok_or((400, "name must be a string".to_string()))?;
            let org = match b.get("org").and_then(Value::as_str) {
                None => 0,
                Some(o) => {
                    orgs.iter()
                        .find(|x| x.name == o)
                        .ok_or_else(|| (404, format!("no organization named `{o}`")))?
                        .id
                }
            };
            let g = e.group_create(name, org).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "group_created",
                format!("filesystem group {name} created"),
            );
            Ok((
                201,
                json!({"id": g.id, "name": g.name, "org": org_name(g.org)}),
            ))
        }
        ("DELETE", [name]) => {
            e.group_delete(name).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "group_deleted",
                format!("filesystem group {name} deleted"),
            );
            Ok((200, json!({"deleted": name})))
        }
        (_, []) | (_, [_]) => Err((405, format!("{} is not allowed here", req.method))),
        _ => Err((404, format!("no route {} under groups", req.method))),
    }
}

/// `POST /v1/fs/{fs}/group`: puts a file system in a group, or in none.
pub(super) fn assign(node: &Node, req: &Req, fs: &str) -> Answer {
    let id = fs_id(node, fs)?;
    let b = body(req)?;
    let group = match field(&b, "group")? {
        Value::Null => None,
        Value::String(s) => Some(s.as_str()),
        _ => return Err((400, "group must be a name or null".into())),
    };
    node.engine.fs_set_group(id, group).map_err(store_err)?;
    Ok((200, json!({"fs": fs, "group": group})))
}
