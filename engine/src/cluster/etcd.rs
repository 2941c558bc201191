//! A client of etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
//! `/v3/watch`): keys and values base64, 64-bit integers as strings, no
//! crates beyond HTTP/1.1 and JSON. It fails over between the members it
//! is given: a member that refuses the connection or answers "unavailable"
//! (no leader, an election, a timeout) is skipped for the next.

use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::kv::{KeyValue, Kv, KvError, Op, Range, Target, Txn, TxnResult};
use crate::net::http;

/// The client: etcd members as `host:port`, tried in turn.
#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: Vec<String>,
    current: usize,
    timeout: Duration,
}

/// The key after every key starting with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// An int64 as the gateway writes it: a string, a number, or absent (0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn key_value(v: &Value) -> KeyValue {
    KeyValue {
        key: unb64(&v["key"]),
        value: unb64(&v["value"]),
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
        version: int(&v["version"]),
        lease: int(&v["lease"]),
    }
}

fn op_json(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => json!({"request_put": {
            "key": b64(key), "value": b64(value), "lease": lease.to_string()}}),
        Op::Delete { key } => json!({"request_delete_range": {"key": b64(key)}}),
        Op::Get { key } => json!({"request_range": {"key": b64(key)}}),
    }
}

/// A watch event: the key's new state, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The key as it is now (for a deletion, its key and `mod_revision`).
    pub kv: KeyValue,
    /// Whether the key was deleted.
    pub deleted: bool,
}

/// A watch on a key or prefix: events as etcd streams them.
pub struct Watch {
    stream: http::Streaming,
    socket: TcpStream,
    pending: Vec<u8>,
}

impl Watch {
    /// A handle that ends the watch from another thread
    /// (`shutdown(Both)` makes [`Watch::next`] return an error).
    pub fn stopper(&self) -> std::io::Result<TcpStream> {
        self.socket.try_clone()
    }

    /// The next batch of events; blocks until etcd sends some. An error
    /// means the stream ended: watch anew from the last revision seen + 1.
    pub fn events(&mut self) -> Result<Vec<WatchEvent>, KvError> {
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.pending).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.pending.drain(..used);
                    let r = &v["result"];
                    if let Some(e) = v.get("error") {
                        return Err(KvError::Refused(e.to_string()));
                    }
                    if r.get("canceled").and_then(Value::as_bool) == Some(true) {
                        return Err(KvError::Unavailable(format!(
                            "the watch was cancelled: {}",
                            r["cancel_reason"]
                        )));
                    }
                    let events: Vec<WatchEvent> = r["events"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|e| WatchEvent {
                                    kv: key_value(&e["kv"]),
                                    deleted: e["type"].as_str() == Some("DELETE"),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                Some(Err(e)) if !e.is_eof() => {
                    return Err(KvError::Refused(format!("a bad watch message: {e}")))
                }
                _ => match self.stream.next_piece() {
                    Ok(Some(p)) => self.pending.extend_from_slice(&p),
                    Ok(None) => return Err(KvError::Unavailable("the watch stream ended".into())),
                    Err(e) => return Err(KvError::Unavailable(e.to_string())),
                },
            }
        }
    }
}

impl Etcd {
    /// A client of these members (`host:port`, an `http://` prefix is
    /// accepted), each call waiting at most `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Etcd {
        assert!(!endpoints.is_empty(), "etcd needs at least one endpoint");
        Etcd {
            endpoints: endpoints
                .iter()
                .map(|e| {
                    e.trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_string()
                })
                .collect(),
            current: 0,
            timeout,
        }
    }

    /// The members.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn request<'a>(&self, endpoint: &'a str, path: &'a str, body: &'a [u8]) -> http::Request<'a> {
        http::Request {
            addr: endpoint,
            method: "POST",
            path,
            token: None,
            body,
            connect_timeout: self.timeout.min(Duration::from_secs(1)),
            read_timeout: self.timeout,
        }
    }

    /// One call, failing over between members on "unavailable".
    fn call(&mut self, path: &str, body: Value) -> Result<Value, KvError> {
        let body = body.to_string();
        let mut last = String::new();
        for _ in 0..self.endpoints.len() {
            let endpoint = self.endpoints[self.current].clone();
            let req = self.request(&endpoint, path, body.as_bytes());
            match http::call(&req) {
                Ok(r) => {
                    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    if r.status == 200 {
                        return Ok(v);
                    }
                    let msg = v["error"]
                        .as_str()
                        .or(v["message"].as_str())
                        .unwrap_or("")
                        .to_string();
                    if msg.contains("lease not found") {
                        return Err(KvError::LeaseGone);
                    }
                    // gRPC codes 14 (unavailable) and 4 (deadline), and an
                    // HTTP 5xx without a code: another member may answer.
                    let code = int(&v["code"]);
                    if code == 14 || code == 4 || (code == 0 && r.status >= 500) {
                        last = format!("{endpoint}: {msg} (HTTP {})", r.status);
                    } else {
                        return Err(KvError::Refused(format!("{msg} (HTTP {})", r.status)));
                    }
                }
                Err(e) => last = format!("{endpoint}: {e}"),
            }
            self.current = (self.current + 1) % self.endpoints.len();
        }
        Err(KvError::Unavailable(last))
    }

    /// Watches `key` (with `prefix`, every key under it) from revision
    /// `from` on, on the first member that takes the watch.
    pub fn watch(&mut self, key: &[u8], prefix: bool, from: i64) -> Result<Watch, KvError> {
        let mut create = json!({"key": b64(key), "start_revision": from.to_string()});
        if prefix {
            create["range_end"] = json!(b64(&prefix_end(key)));
        }
        let body = json!({ "create_request": create }).to_string();
        let mut last = String::new();
        for _ in 0..self.endpoints.len() {
            let endpoint = self.endpoints[self.current].clone();
            let mut req = self.request(&endpoint, "/v3/watch", body.as_bytes());
            // A watch waits for events as long as it must.
            req.read_timeout = Duration::from_secs(24 * 3600);
            match http::send(&req) {
                Ok(s) if s.status() == 200 => {
                    let socket = s
                        .socket()
                        .map_err(|e| KvError::Unavailable(e.to_string()))?;
                    return Ok(Watch {
                        stream: s,
                        socket,
                        pending: Vec::new(),
                    });
                }
                Ok(s) => last = format!("{endpoint}: HTTP {}", s.status()),
                Err(e) => last = format!("{endpoint}: {e}"),
            }
            self.current = (self.current + 1) % self.endpoints.len();
        }
        Err(KvError::Unavailable(last))
    }
}

impl Kv for Etcd {
    fn range(&mut self, key: &[u8], prefix: bool) -> Result<Range, KvError> {
        let mut body = json!({"key": b64(key)});
        if prefix {
            body["range_end"] = json!(b64(&prefix_end(key)));
        }
        let v = self.call("/v3/kv/range", body)?;
        Ok(Range {
            kvs: v["kvs"]
                .as_array()
                .map(|a| a.iter().map(key_value).collect())
                .unwrap_or_default(),
            revision: int(&v["header"]["revision"]),
        })
    }

    fn txn(&mut self, txn: &Txn) -> Result<TxnResult, KvError> {
        let compare: Vec<Value> = txn
            .compare
            .iter()
            .map(|c| match &c.target {
                Target::Create(r) => json!({"key": b64(&c.key), "target": "CREATE",
                    "result": "EQUAL", "create_revision": r.to_string()}),
                Target::Mod(r) => json!({"key": b64(&c.key), "target": "MOD",
                    "result": "EQUAL", "mod_revision": r.to_string()}),
                Target::Value(x) => json!({"key": b64(&c.key), "target": "VALUE",
                    "result": "EQUAL", "value": b64(x)}),
            })
            .collect();
        let body = json!({
            "compare": compare,
            "success": txn.success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": txn.failure.iter().map(op_json).collect::<Vec<_>>(),
        });
        let v = self.call("/v3/kv/txn", body)?;
        let gets = v["responses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("response_range"))
                    .map(|r| r["kvs"].as_array().and_then(|k| k.first()).map(key_value))
                    .collect()
            })
            .unwrap_or_default();
        Ok(TxnResult {
            succeeded: v["succeeded"].as_bool().unwrap_or(false),
            revision: int(&v["header"]["revision"]),
            gets,
        })
    }

    fn grant(&mut self, ttl_s: i64) -> Result<(i64, i64), KvError> {
        let v = self.call("/v3/lease/grant", json!({"TTL": ttl_s.to_string()}))?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(KvError::Refused(format!("no lease in {v}")));
        }
        Ok((id, int(&v["TTL"])))
    }

    fn keep_alive(&mut self, lease: i64) -> Result<i64, KvError> {
        let v = self.call("/v3/lease/keepalive", json!({"ID": lease.to_string()}))?;
        match int(&v["result"]["TTL"]) {
            ttl if ttl > 0 => Ok(ttl),
            _ => Err(KvError::LeaseGone),
        }
    }

    fn revoke(&mut self, lease: i64) -> Result<(), KvError> {
        match self.call("/v3/lease/revoke", json!({"ID": lease.to_string()})) {
            Ok(_) | Err(KvError::LeaseGone) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_integers_read_as_the_gateway_writes_them() {
        assert_eq!(prefix_end(b"/flint/"), b"/flint0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        let kv = key_value(&json!({"key": b64(b"/k"), "value": b64(b"v"),
            "create_revision": "3", "mod_revision": "5", "version": "2"}));
        assert_eq!(
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease
            ),
            (b"/k".to_vec(), b"v".to_vec(), 3, 5, 2, 0)
        );
    }
}
