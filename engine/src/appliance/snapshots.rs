//! The management API's snapshots of a file system, under
//! `/v1/fs/{name}/snapshots`: list (GET), create (POST `{"name": ...,
//! "writable": bool}`; a writable one is file system `{name}@{snapshot}`),
//! delete (DELETE `.../{snapshot}`) and restore (POST
//! `.../{snapshot}/restore`, optionally `{"keep_current": NAME}`).

use serde_json::{json, Value};

use super::events::Level;
use super::mgmt::{body, field, fs_id, store_err, Answer, Node, Req};
use crate::engine::SnapInfo;

/// A snapshot as the API shows it.
pub(super) fn snap_json(s: &SnapInfo) -> Value {
    json!({"id": s.id, "name": s.name, "created_ns": s.created, "bytes": s.bytes,
           "reclaimable": s.reclaimable, "writable": false})
}

fn name_of(v: &Value, key: &str) -> Result<String, (u16, String)> {
    field(v, key)?
        .as_str()
        .map(str::to_string)
        .ok_or((400, format!("{key} must be a string")))
}

/// Answers a request under `/v1/fs/{fs}/snapshots/{rest...}`.
pub(super) fn route(node: &Node, req: &Req, fs: &str, rest: &[&str]) -> Answer {
    let e = &node.engine;
    let id = fs_id(node, fs)?;
    match (req.method.as_str(), rest) {
        ("GET", []) => {
            let list = e.snapshot_list(Some(id)).map_err(store_err)?;
            let mut out: Vec<Value> = list.iter().map(snap_json).collect();
            let used: std::collections::HashMap<u32, u64> = e
                .fs_list()
                .map_err(store_err)?
                .into_iter()
                .map(|(f, u)| (f.id, u))
                .collect();
            for c in e.snapshot_clones(id).map_err(store_err)? {
                out.push(
                    json!({"name": c.name, "created_ns": c.created, "writable": true,
                    "bytes": used.get(&c.fs).copied().unwrap_or(0), "reclaimable": null,
                    "filesystem": format!("{fs}@{}", c.name)}),
                );
            }
            Ok((200, Value::Array(out)))
        }
        ("POST", []) => {
            let b = body(req)?;
            let name = name_of(&b, "name")?;
            if b.get("writable").and_then(Value::as_bool) == Some(true) {
                let c = e.snapshot_create_writable(id, &name).map_err(store_err)?;
                node.events.push(
                    Level::Info,
                    "snapshot_created",
                    format!("writable snapshot {name} of {fs} taken: file system {fs}@{name}"),
                );
                return Ok((
                    201,
                    json!({"name": name, "writable": true, "created_ns": c.created,
                           "filesystem": format!("{fs}@{name}")}),
                ));
            }
            let s = e.snapshot_create(id, &name).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "snapshot_created",
                format!("snapshot {name} of {fs} taken ({} bytes)", s.bytes),
            );
            Ok((201, snap_json(&s)))
        }
        ("DELETE", [snap]) => {
            let clones = e.snapshot_clones(id).map_err(store_err)?;
            if let Some(c) = clones.iter().find(|c| c.name == *snap) {
                e.fs_delete(c.fs).map_err(store_err)?;
                node.events.push(
                    Level::Info,
                    "snapshot_deleted",
                    format!("writable snapshot {snap} of {fs} deleted with its file system"),
                );
                return Ok((200, json!({"deleted": snap, "writable": true})));
            }
            let freed = e
                .snapshot_list(Some(id))
                .map_err(store_err)?
                .into_iter()
                .find(|s| s.name == *snap)
                .map_or(0, |s| s.reclaimable);
            e.snapshot_delete(id, snap).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "snapshot_deleted",
                format!("snapshot {snap} of {fs} deleted ({freed} bytes reclaimable)"),
            );
            Ok((200, json!({"deleted": snap, "reclaimed": freed})))
        }
        ("POST", [snap, "restore"]) => {
            if e.snapshot_clones(id)
                .map_err(store_err)?
                .iter()
                .any(|c| c.name == *snap)
            {
                return Err((
                    400,
                    format!(
                        "{snap} is a writable snapshot, file system {fs}@{snap} of its own; \
                         copy from it, or restore from a read-only snapshot"
                    ),
                ));
            }
            let keep = if req.body.is_empty() {
                None
            } else {
                body(req)?
                    .get("keep_current")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            e.snapshot_restore(id, snap, keep.as_deref())
                .map_err(store_err)?;
            let kept = keep.as_ref().map_or(String::new(), |k| {
                format!(" (its state before kept as {k})")
            });
            node.events.push(
                Level::Warning,
                "snapshot_restored",
                format!("{fs} restored to snapshot {snap}{kept}"),
            );
            Ok((200, json!({"restored": snap, "kept": keep})))
        }
        (_, []) | (_, [_]) => Err((405, format!("{} is not allowed here", req.method))),
        _ => Err((404, format!("no route {} under snapshots", req.method))),
    }
}
