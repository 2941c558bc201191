//! The management API's directory quotas of a file system, under
//! `/v1/fs/{name}/quotas`: list (GET), set or change (POST `{"path",
//! "hard", "soft", "grace"}`) and unset (DELETE `{"path"}`). Setting a
//! new quota answers at once and counts the directory in the background
//! (`state: counting`, `scanned` entries so far); it is enforced once
//! counted.

use std::sync::Arc;

use serde_json::{json, Value};

use super::events::{Events, Level};
use super::mgmt::{body, field, fs_id, size_in, store_err, Answer, Node, Req};
use crate::engine::{Engine, QuotaEvent, QuotaInfo};
use crate::meta::quota::{QuotaId, QuotaState};

/// A quota as the API shows it.
pub(super) fn quota_json(q: &QuotaInfo) -> Value {
    json!({"id": q.quota.id, "path": q.quota.path, "used": q.used,
           "hard": q.quota.hard, "soft": q.quota.soft, "grace_secs": q.quota.grace,
           "in_grace": q.in_grace, "over_since_ns": q.quota.over_since,
           "state": q.quota.state.name(), "scanned": q.scanned, "refused": q.refused,
           "parent": q.quota.parent})
}

/// A duration: seconds, or a number with `s`, `m`, `h`, `d` or `w`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 3600, \"90m\" or \"7d\""))?;
    let per = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        u => return Err(format!("`{u}` is not a unit of time; use s, m, h, d or w")),
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("duration `{text}` is too long"))
}

fn limit(b: &Value, key: &str) -> Result<u64, (u16, String)> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => size_in(v, key),
    }
}

/// Counts (or removes) quota `id` in the background, with an event when
/// done.
pub fn scan_in_background(engine: Arc<Engine>, events: Arc<Events>, id: QuotaId) {
    let spawned = std::thread::Builder::new()
        .name(format!("flint-quota-{id}"))
        .spawn(move || {
            let q = engine
                .quota_list(None)
                .into_iter()
                .find(|q| q.quota.id == id);
            match engine.quota_scan(id) {
                Ok(()) => {
                    if let Some(q) = q {
                        let now = engine
                            .quota_list(None)
                            .into_iter()
                            .find(|x| x.quota.id == id);
                        let msg = match now {
                            // Stopped before the end: it goes on at the next start.
                            Some(n) if n.quota.state != QuotaState::Enforcing => return,
                            Some(n) => format!(
                                "quota on {} counted: {} bytes under it; enforced",
                                n.quota.path, n.used
                            ),
                            None => format!("quota on {} removed", q.quota.path),
                        };
                        events.push(Level::Info, "quota_counted", msg);
                    }
                }
                Err(e) => events.push(
                    Level::Warning,
                    "quota_scan_failed",
                    format!("counting quota {id} failed: {e}; it is retried at the next start"),
                ),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, quota = id, "cannot start a quota scan");
    }
}

/// Events for what a quota tick found.
pub fn report(events: &Events, found: Vec<QuotaEvent>) {
    for ev in found {
        match ev {
            QuotaEvent::SoftExceeded(q, used) => events.push(
                Level::Warning,
                "quota_soft_exceeded",
                format!(
                    "quota on {} is over its soft limit ({used} of {} bytes); writes are refused \
                     after {} s of grace",
                    q.path, q.soft, q.grace
                ),
            ),
            QuotaEvent::GraceExpired(q, used) => events.push(
                Level::Critical,
                "quota_grace_expired",
                format!(
                    "quota on {}: grace over with {used} bytes above the soft limit of {}; \
                     writes growing files under it fail with EDQUOT",
                    q.path, q.soft
                ),
            ),
            QuotaEvent::BelowSoft(q, used) => events.push(
                Level::Info,
                "quota_below_soft",
                format!("quota on {} is back under its soft limit ({used} bytes)", q.path),
            ),
            QuotaEvent::Refused(q, used, n) => events.push(
                Level::Warning,
                "quota_hard_limit",
                format!(
                    "quota on {} refused {n} writes with EDQUOT ({used} bytes used, hard {}, soft {})",
                    q.path, q.hard, q.soft
                ),
            ),
        }
    }
}

/// Answers a request under `/v1/fs/{fs}/quotas/{rest...}`.
pub(super) fn route(node: &Node, req: &Req, fs: &str, rest: &[&str]) -> Answer {
    let e = &node.engine;
    let id = fs_id(node, fs)?;
    match (req.method.as_str(), rest) {
        ("GET", []) => Ok((
            200,
            Value::Array(e.quota_list(Some(id)).iter().map(quota_json).collect()),
        )),
        ("POST", []) => {
            let b = body(req)?;
            let path = field(&b, "path")?
                .as_str()
                .ok_or((400, "path must be a string".to_string()))?;
            let (hard, soft) = (limit(&b, "hard")?, limit(&b, "soft")?);
            let grace = match b.get("grace") {
                None | Some(Value::Null) => 7 * 86_400,
                Some(Value::Number(n)) => n
                    .as_u64()
                    .ok_or((400, "grace must be a number of seconds".to_string()))?,
                Some(Value::String(s)) => parse_duration(s).map_err(|m| (400, m))?,
                Some(_) => return Err((400, "grace must be seconds or e.g. \"7d\"".into())),
            };
            let q = e
                .quota_set(id, path, hard, soft, grace)
                .map_err(store_err)?;
            node.events.push(
                Level::Info,
                "quota_set",
                format!(
                    "quota on {} of {fs}: hard {hard}, soft {soft}, grace {grace} s ({})",
                    q.path,
                    q.state.name()
                ),
            );
            if q.state != QuotaState::Enforcing {
                scan_in_background(e.clone(), node.events.clone(), q.id);
            }
            let info = e
                .quota_list(Some(id))
                .into_iter()
                .find(|x| x.quota.id == q.id);
            Ok((201, info.as_ref().map_or(Value::Null, quota_json)))
        }
        ("DELETE", []) => {
            let b = body(req)?;
            let path = field(&b, "path")?
                .as_str()
                .ok_or((400, "path must be a string".to_string()))?;
            let q = e.quota_unset(id, path).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "quota_unset",
                format!("quota on {} of {fs} unset", q.path),
            );
            scan_in_background(e.clone(), node.events.clone(), q.id);
            Ok((200, json!({"unset": q.path})))
        }
        (_, []) => Err((405, format!("{} is not allowed here", req.method))),
        _ => Err((404, format!("no route {} under quotas", req.method))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(super::parse_duration("90"), Ok(90));
        assert_eq!(super::parse_duration("90m"), Ok(5400));
        assert_eq!(super::parse_duration("7d"), Ok(604_800));
        assert!(super::parse_duration("7y").is_err());
        assert!(super::parse_duration("x").is_err());
    }
}
