//! The management API: HTTP/1.1 with JSON bodies on the management
//! address, every route behind a bearer token when one is configured.
//! Small on purpose — a request per connection, a thread per request: it
//! serves the CLI and Prometheus, not data.
//!
//! Routes (all under `Authorization: Bearer <token>` when a token is set):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/status` | node: version, uptime, shards, reactors, sessions, space |
//! | `GET /v1/cluster` | in a cluster: the node's epoch, fence, coordinator role, etcd errors |
//! | `GET /v1/devices` | each device: health, errors, capacity, free |
//! | `POST /v1/devices/<name>/replace` | rebuild the blank device `<name>` into the missing slot; `{force}` for one holding another engine's superblock |
//! | `GET /v1/fs` | file systems with usage and owner |
//! | `POST /v1/fs` | create: `{name, k, m, reduction, capacity, org, write_back, group}` |
//! | `PATCH /v1/fs/<name>` | update: `{capacity}` |
//! | `DELETE /v1/fs/<name>` | delete it and its files |
//! | `GET/POST/DELETE /v1/fs/<name>/snapshots[/<snap>]` | snapshots (`snapshots.rs`) |
//! | `GET/POST/DELETE /v1/fs/<name>/quotas` | directory quotas (`quotas.rs`) |
//! | `GET/POST /v1/groups`, `DELETE /v1/groups/<name>` | filesystem groups (`groups.rs`) |
//! | `POST /v1/fs/<name>/group` | put a file system in a group: `{group}` |
//! | `GET /v1/orgs` | organizations |
//! | `POST /v1/orgs` | create: `{name}`; the answer holds its key, once |
//! | `GET /v1/stats` | per operation: count, bytes, latency percentiles; protocol counters; reactors |
//! | `GET /v1/events?since=N` | events and alerts after N |
//! | `POST /v1/scrub` | start a scrub; `GET /v1/jobs/<id>` follows it |
//! | `GET /metrics` | Prometheus text format |

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::events::{Events, Level};
use crate::engine::Engine;
use crate::meta::namespace::NsError;
use crate::net::server::ServerView;
use crate::store::StoreError;

/// A long-running job (scrub).
#[derive(Debug, Clone, Default)]
struct Job {
    kind: &'static str,
    done: u64,
    total: u64,
    state: &'static str,
    message: String,
}

/// What the API reads and changes.
pub struct Node {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The data server's figures.
    pub server: ServerView,
    /// Events.
    pub events: Arc<Events>,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// When the node started.
    pub started: Instant,
    /// The NVMe/TCP target, when it serves one.
    pub nvmf: Option<Arc<crate::nvmf::subsystem::Target>>,
    /// The cluster agent's view (node id, view), in a cluster.
    pub cluster: Option<(u32, Arc<crate::cluster::agent::ClusterView>)>,
    jobs: Arc<Mutex<HashMap<u64, Job>>>,
    next_job: AtomicU64,
}

fn set_job(
    jobs: &Mutex<HashMap<u64, Job>>,
    id: u64,
    done: u64,
    state: &'static str,
    message: String,
) {
    if let Ok(mut m) = jobs.lock() {
        if let Some(j) = m.get_mut(&id) {
            j.done = done;
            j.state = state;
            j.message = message;
        }
    }
}

impl Node {
    /// A node's API state.
    pub fn new(
        engine: Arc<Engine>,
        server: ServerView,
        events: Arc<Events>,
        token: Option<String>,
    ) -> Node {
        Node {
            engine,
            server,
            events,
            token,
            started: Instant::now(),
            nvmf: None,
            cluster: None,
            jobs: Arc::new(Mutex::new(HashMap::new())),
            next_job: AtomicU64::new(1),
        }
    }
}

/// A running management API.
pub struct Mgmt {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Mgmt {
    /// Listens on `addr` (a taken port is an `AddrInUse` error).
    pub fn start(addr: SocketAddr, node: Arc<Node>) -> std::io::Result<Mgmt> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flint-mgmt".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    match l.accept() {
                        Ok((conn, _)) => {
                            let node = node.clone();
                            let _ = std::thread::Builder::new()
                                .name("flint-mgmt-req".into())
                                .spawn(move || handle(conn, &node));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "management accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(Mgmt {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) struct Req {
    pub(super) method: String,
    path: String,
    query: String,
    auth: Option<String>,
    pub(super) body: Vec<u8>,
}

fn read_req(conn: &mut TcpStream) -> Result<Req, (u16, String)> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut r = BufReader::new(conn.try_clone().map_err(|e| (500, e.to_string()))?);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| (400, e.to_string()))?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err((400, "malformed request line".into()));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (mut len, mut auth) = (0usize, None);
    let mut header_bytes = 0;
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h).map_err(|e| (400, e.to_string()))?;
        header_bytes += n;
        if n == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if header_bytes > 64 << 10 {
            return Err((431, "headers too large".into()));
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v
                    .parse()
                    .map_err(|_| (400, "bad content-length".to_string()))?;
            } else if k == "authorization" {
                auth = v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
            }
        }
    }
    if len > 1 << 20 {
        return Err((413, "body too large".into()));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| (400, e.to_string()))?;
    Ok(Req {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        auth,
        body,
    })
}

fn respond(conn: &mut TcpStream, code: u16, ctype: &str, body: &[u8]) {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        507 => "Insufficient Storage",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn handle(mut conn: TcpStream, node: &Node) {
    let (code, ctype, body) = match read_req(&mut conn) {
        Err((code, why)) => (
            code,
            "application/json",
            json!({ "error": why }).to_string(),
        ),
        Ok(req) => {
            let authed = match &node.token {
                None => true,
                Some(t) => req
                    .auth
                    .as_deref()
                    .is_some_and(|a| crate::net::auth::same(a.as_bytes(), t.as_bytes())),
            };
            if !authed {
                (
                    401,
                    "application/json",
                    json!({ "error": "missing or wrong token (send Authorization: Bearer <token>)" })
                        .to_string(),
                )
            } else if req.path == "/metrics" && req.method == "GET" {
                (
                    200,
                    "text/plain; version=0.0.4",
                    super::metrics::metrics(node),
                )
            } else {
                let (code, v) =
                    route(node, &req).unwrap_or_else(|(c, why)| (c, json!({ "error": why })));
                (code, "application/json", v.to_string())
            }
        }
    };
    respond(&mut conn, code, ctype, body.as_bytes());
}

pub(super) type Answer = Result<(u16, Value), (u16, String)>;

pub(super) fn store_err(e: StoreError) -> (u16, String) {
    let code = match e {
        StoreError::NotFound { .. } => 404,
        StoreError::Exists { .. }
        | StoreError::AlreadyFormatted { .. }
        | StoreError::ReadOnly { .. } => 409,
        StoreError::Invalid { .. } | StoreError::Mismatch { .. } => 400,
        StoreError::NoSpace { .. } | StoreError::Quota { .. } => 507,
        StoreError::Ns(NsError::NotFound) => 404,
        StoreError::Ns(NsError::Exists) => 409,
        StoreError::Ns(NsError::Tree(_) | NsError::Remote(_)) => 500,
        StoreError::Ns(_) => 400,
        _ => 500,
    };
    (code, e.to_string())
}

pub(super) fn body(req: &Req) -> Result<Value, (u16, String)> {
    serde_json::from_slice(&req.body).map_err(|e| (400, format!("body is not JSON: {e}")))
}

pub(super) fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, (u16, String)> {
    v.get(k)
        .ok_or_else(|| (400, format!("missing field `{k}`")))
}

fn size_of(v: &Value) -> Result<u64, (u16, String)> {
    size_in(v, "capacity")
}

/// A size field: a number of bytes, or a size like `"10GiB"`.
pub(super) fn size_in(v: &Value, key: &str) -> Result<u64, (u16, String)> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| (400, format!("{key} must be a positive number"))),
        Value::String(s) => flint_dataplane::config::ByteSize::parse(s)
            .map(|b| b.0)
            .map_err(|e| (400, format!("{key}: {e}"))),
        _ => Err((
            400,
            format!("{key} must be a number of bytes or a size like \"10GiB\""),
        )),
    }
}

pub(super) fn fs_id(node: &Node, name: &str) -> Result<u32, (u16, String)> {
    node.engine
        .fs_by_name(name)
        .map_err(store_err)?
        .ok_or_else(|| (404, format!("no file system named `{name}`")))
}

fn route(node: &Node, req: &Req) -> Answer {
    let e = &node.engine;
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["v1", "status"]) => {
            let sp = e.space().map_err(store_err)?;
            let devs = e.devices().map_err(store_err)?;
            let quotas = e.quota_list(None);
            Ok((
                200,
                json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": node.started.elapsed().as_secs(),
                    "shards": e.shard_map().shards(),
                    "reactors": e.reactor_stats().len(),
                    "epoch": e.shard_map().epoch(),
                    "sessions": node.server.sessions(),
                    "devices": devs.len(),
                    "devices_healthy": devs.iter().filter(|d| d.healthy).count(),
                    "snapshots": e.snapshot_list(None).map_err(store_err)?.len(),
                    "quotas": quotas.len(),
                    "quotas_in_grace": quotas.iter().filter(|q| q.in_grace).count(),
                    "quotas_counting": e.quota_pending().len(),
                    "groups": e.groups().map_err(store_err)?.len(),
                    "space": {
                        "logical": sp.logical, "physical": sp.physical, "capacity": sp.capacity,
                        "dedup_ratio": sp.dedup_ratio, "compression_ratio": sp.compression_ratio,
                    },
                }),
            ))
        }
        ("GET", ["v1", "cluster"]) => match &node.cluster {
            Some((id, view)) => Ok((200, view.status(*id))),
            None => Err((
                404,
                "this node is not in a cluster (no [cluster] in its config)".into(),
            )),
        },
        ("GET", ["v1", "devices"]) => {
            let devs = e.devices().map_err(store_err)?;
            Ok((
                200,
                Value::Array(
                    devs.iter()
                        .map(|d| {
                            json!({"index": d.index, "name": d.name, "present": d.present,
                                   "healthy": d.healthy, "errors": d.errors,
                                   "capacity": d.capacity, "free": d.free})
                        })
                        .collect(),
                ),
            ))
        }
        ("GET", ["v1", "fs"]) => {
            let orgs: HashMap<u32, String> = e
                .orgs()
                .map_err(store_err)?
                .into_iter()
                .map(|o| (o.id, o.name))
                .collect();
            let mut out = Vec::new();
            let snaps = e.snapshot_list(None).map_err(store_err)?;
            let quotas = e.quota_list(None);
            for (f, used) in e.fs_list().map_err(store_err)? {
                let owner = e.fs_owner(f.id).map_err(store_err)?;
                let group = e.fs_group(f.id).map_err(store_err)?.map(|g| g.name);
                out.push(json!({"id": f.id, "name": f.name, "k": f.k, "m": f.m,
                    "reduction": f.reduction, "capacity": f.capacity, "used": used,
                    "ack": if f.write_back { "write_back" } else { "durable" },
                    "org": owner.and_then(|o| orgs.get(&o).cloned()), "group": group,
                    "snapshots": snaps.iter().filter(|s| s.fs == f.id).count(),
                    "quotas": quotas.iter().filter(|q| q.quota.fs == f.id).count()}));
            }
            Ok((200, Value::Array(out)))
        }
        ("POST", ["v1", "devices", name, "replace"]) => {
            let force = if req.body.is_empty() {
                false
            } else {
                body(req)?["force"].as_bool().unwrap_or(false)
            };
            let r = e.replace_device(name, force).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "device_replaced",
                format!(
                    "device {name} took slot {} ({} chunks rebuilt onto it)",
                    r.index, r.chunks
                ),
            );
            Ok((
                200,
                json!({"name": name, "index": r.index, "chunks": r.chunks}),
            ))
        }
        ("POST", ["v1", "fs"]) => {
            let b = body(req)?;
            let name = field(&b, "name")?
                .as_str()
                .ok_or((400, "name must be a string".to_string()))?;
            let k = field(&b, "k")?
                .as_u64()
                .ok_or((400, "k must be a number".to_string()))?;
            let m = field(&b, "m")?
                .as_u64()
                .ok_or((400, "m must be a number".to_string()))?;
            let reduction = b.get("reduction").and_then(Value::as_bool).unwrap_or(true);
            let write_back = b
                .get("write_back")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let capacity = size_of(field(&b, "capacity")?)?;
            let org = field(&b, "org")?
                .as_str()
                .ok_or((400, "org must be a string".to_string()))?;
            let org = e
                .orgs()
                .map_err(store_err)?
                .into_iter()
                .find(|o| o.name == org)
                .ok_or_else(|| (404, format!("no organization named `{org}`")))?;
            if k > 32 || m > 32 {
                return Err((400, "k and m must be at most 32".into()));
            }
            if e.fs_by_name(name).map_err(store_err)?.is_some() {
                return Err((409, format!("file system `{name}` exists")));
            }
            let group = match b.get("group").and_then(Value::as_str) {
                None => None,
                Some(g) => {
                    let grp = e
                        .groups()
                        .map_err(store_err)?
                        .into_iter()
                        .find(|x| x.name == g)
                        .ok_or_else(|| (404, format!("no filesystem group named `{g}`")))?;
                    if grp.org != org.id {
                        return Err((
                            400,
                            format!("filesystem group {g} is not of organization {}", org.name),
                        ));
                    }
                    Some(g.to_string())
                }
            };
            let id = e
                .fs_create(name, k as u8, m as u8, reduction, capacity)
                .map_err(store_err)?;
            e.fs_set_owner(id, org.id).map_err(store_err)?;
            if group.is_some() {
                e.fs_set_group(id, group.as_deref()).map_err(store_err)?;
            }
            if write_back {
                e.fs_set_write_back(id, true).map_err(store_err)?;
            }
            e.sync().map_err(store_err)?;
            node.events.push(
                Level::Info,
                "fs_created",
                format!("file system {name} created ({k}+{m}) for {}", org.name),
            );
            Ok((201, json!({"id": id, "name": name})))
        }
        ("PATCH", ["v1", "fs", name]) => {
            let id = fs_id(node, name)?;
            let b = body(req)?;
            let cap = size_of(field(&b, "capacity")?)?;
            e.fs_resize(id, cap).map_err(store_err)?;
            Ok((200, json!({"id": id, "capacity": cap})))
        }
        ("DELETE", ["v1", "fs", name]) => {
            let id = fs_id(node, name)?;
            e.fs_delete(id).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "fs_deleted",
                format!("file system {name} deleted"),
            );
            Ok((200, json!({"deleted": name})))
        }
        (_, ["v1", "fs", name, "snapshots", rest @ ..]) => {
            super::snapshots::route(node, req, name, rest)
        }
        (_, ["v1", "fs", name, "quotas", rest @ ..]) => super::quotas::route(node, req, name, rest),
        ("POST", ["v1", "fs", name, "group"]) => super::groups::assign(node, req, name),
        (_, ["v1", "groups", rest @ ..]) => super::groups::route(node, req, rest),
        ("GET", ["v1", "orgs"]) => Ok((
            200,
            Value::Array(
                e.orgs()
                    .map_err(store_err)?
                    .into_iter()
                    .map(|o| json!({"id": o.id, "name": o.name}))
                    .collect(),
            ),
        )),
        ("POST", ["v1", "orgs"]) => {
            let b = body(req)?;
            let name = field(&b, "name")?
                .as_str()
                .ok_or((400, "name must be a string".to_string()))?;
            let o = e.org_create(name).map_err(store_err)?;
            node.events.push(
                Level::Info,
                "org_created",
                format!("organization {name} created"),
            );
            Ok((
                201,
                json!({"id": o.id, "name": o.name, "key": crate::net::auth::key_to_hex(&o.key)}),
            ))
        }
        ("GET", ["v1", "stats"]) => {
            let mut ops = serde_json::Map::new();
            let up = node.started.elapsed().as_secs_f64().max(1e-3);
            for (op, s) in node.server.stats().snapshot() {
                ops.insert(
                    op.to_string(),
                    json!({"count": s.count, "bytes": s.bytes,
                        "ops_per_s": s.count as f64 / up, "bytes_per_s": s.bytes as f64 / up,
                        "p50_us": s.latency.value_at_quantile(0.5),
                        "p99_us": s.latency.value_at_quantile(0.99),
                        "p999_us": s.latency.value_at_quantile(0.999),
                        "max_us": s.latency.max()}),
                );
            }
            let counters: serde_json::Map<String, Value> = node
                .server
                .counters()
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            let reactors: Vec<Value> = e
                .reactor_stats()
                .iter()
                .map(|r| {
                    json!({"core": r.core, "busy_ratio": r.busy_ratio, "ios": r.ios,
                    "io_errors": r.io_errors, "messages": r.messages, "parks": r.parks})
                })
                .collect();
            Ok((
                200,
                json!({"ops": ops, "protocol": counters, "reactors": reactors}),
            ))
        }
        ("GET", ["v1", "events"]) => {
            let since = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("since="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Ok((
                200,
                serde_json::to_value(node.events.since(since)).unwrap_or_default(),
            ))
        }
        ("POST", ["v1", "scrub"]) => {
            let id = node.next_job.fetch_add(1, Ordering::Relaxed);
            let total = u64::from(e.shard_map().shards());
            if let Ok(mut j) = node.jobs.lock() {
                j.insert(
                    id,
                    Job {
                        kind: "scrub",
                        total,
                        state: "running",
                        ..Job::default()
                    },
                );
            }
            let engine = e.clone();
            let events = node.events.clone();
            let jobs = node.jobs.clone();
            std::thread::spawn(move || {
                let r = engine
                    .scrub(|done| set_job(&jobs, id, u64::from(done), "running", String::new()));
                match r {
                    Ok(rep) => {
                        let msg = format!(
                            "scrub: {} stripes checked, {} sectors repaired, {} chunks rebuilt, {} unrecoverable",
                            rep.stripes, rep.repaired_sectors, rep.relocated_chunks, rep.unrecoverable
                        );
                        if rep.relocated_chunks > 0 {
                            events.push(Level::Info, "rebuilt", msg.clone());
                        }
                        set_job(&jobs, id, total, "done", msg);
                    }
                    Err(err) => set_job(&jobs, id, 0, "failed", err.to_string()),
                }
            });
            Ok((202, json!({"job": id})))
        }
        ("GET", ["v1", "jobs", id]) => {
            let id: u64 = id
                .parse()
                .map_err(|_| (400, "job ids are numbers".to_string()))?;
            let j = node
                .jobs
                .lock()
                .ok()
                .and_then(|m| m.get(&id).cloned())
                .ok_or_else(|| (404, format!("no job {id}")))?;
            Ok((
                200,
                json!({"id": id, "kind": j.kind, "state": j.state, "done": j.done,
                "total": j.total, "message": j.message}),
            ))
        }
        (_, ["v1", ..]) | (_, ["metrics"]) => {
            Err((404, format!("no route {} {}", req.method, req.path)))
        }
        _ => Err((404, format!("no route {} {}", req.method, req.path))),
    }
}
