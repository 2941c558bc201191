//! The `flint` command line: `serve` and `format` run here; everything else
//! talks to a running node's management API (or, for `put`/`get`/`ls`, its
//! data protocol). Human tables by default, `--json` everywhere, a progress
//! bar on long work, a non-zero exit and one clear line on every failure.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

mod cluster;
mod groups;
mod quotas;
mod snapshots;

use super::config::ApplianceConfig;
use super::serve::{self, ServeOptions};
use crate::net::client::{Client, ClientConfig};
use crate::net::{auth, http};

/// Usage text.
pub const USAGE: &str = "\
flint — Flint storage node and its management CLI

USAGE: flint [--config FILE] [--addr HOST:PORT] [--token TOKEN] [--json] COMMAND

Node:
  serve [--init] [--format [--force]]   run a node (SIGTERM: drain, checkpoint, exit 0)
  format [--force]                      format the config's devices as a new engine
Management (over the API at --addr, or the config's server.mgmt_addr):
  status                                node, space, sessions
  device list                           devices: health, errors, capacity
  device replace NAME [--force]         rebuild the blank device NAME (in the
                                        config) into the missing slot
  fs create NAME --k K --m M --capacity SIZE --org ORG [--no-reduction] [--write-back]
                    [--group GROUP]
  fs list | fs update NAME --capacity SIZE | fs delete NAME
  fs snapshot create FS NAME [--writable]   read-only (in the mount: /.snapshots/NAME),
                    or writable: a clone, file system FS@NAME of its own
  fs snapshot list FS | fs snapshot delete FS NAME
  fs snapshot restore FS NAME [--keep-current NAME]   the file system back to NAME
  fs quota set FS PATH --hard SIZE [--soft SIZE --grace DURATION]   a directory quota
                    (EDQUOT past hard; past soft for longer than grace, default 7d)
  fs quota list FS | fs quota unset FS PATH
  fs group create NAME [--org ORG] | fs group list | fs group delete NAME
  fs group assign FS GROUP | fs group assign FS --none
  org create NAME                       prints the new organization's key (once)
  org list
  stats [--watch]                       per-operation counts and latency, protocol counters
  events [--since N]                    events and alerts
  scrub                                 verify every stripe, rebuild onto healthy devices
Cluster (etcd at the config's [cluster] etcd, or --etcd HOST:PORT[,...]; --cluster NAME):
  cluster create --shards N [--nodes 1,2,3] [--k K --m M]   create the cluster (members:
                    the nodes registered now, or those named); with --k/--m each shard is a
                    bucket: an engine with K+M stripes over a slice on every node
  cluster put default/NAME FILE | cluster get default/NAME [FILE]   a file in the bucket
                    NAME hashes to, following it across failovers (the [cluster] key_file)
  cluster status | cluster host list          the map's epoch, coordinator, hosts, shards
  cluster add NODE | cluster remove NODE      admit a node; drain one (its shards move
                    off one at a time) and drop it
  cluster maint NODE [--off]                  a planned restart: nothing is rebuilt for it
Data (over the protocol at the config's server.data_addr):
  put FS/PATH FILE | get FS/PATH [FILE] | ls FS[/DIR] | stat FS/PATH
  mkdir FS/PATH | mv FS/FROM TO | rm FS/PATH (a file, link or empty directory)
                    (--org ORG --key-file F, default the config's first [[org]])
POSIX mount (FUSE; the config, when given, supplies the address, org and key):
  mount [HOST:PORT]/FS MOUNTPOINT [-f] [-o OPT,...]   mount FS (a daemon unless -f;
                    -o org=,key_file=,ro,attr_timeout=,entry_timeout=,timeout=,threads=,log=)
  umount [-l] MOUNTPOINT                              unmount it (-l: detach while busy)

The token comes from --token, $FLINT_TOKEN or the config's server.token.
";

struct Opts {
    config: Option<PathBuf>,
    addr: Option<String>,
    token: Option<String>,
    json: bool,
    args: Vec<String>,
}

fn parse(argv: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        config: None,
        addr: None,
        token: std::env::var("FLINT_TOKEN").ok(),
        json: false,
        args: Vec::new(),
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--config" | "-c" => o.config = Some(PathBuf::from(val("--config")?)),
            "--addr" => o.addr = Some(val("--addr")?),
            "--token" => o.token = Some(val("--token")?),
            "--json" => o.json = true,
            _ => o.args.push(a.clone()),
        }
    }
    Ok(o)
}

/// Runs the CLI; returns the process exit code.
pub fn main(argv: &[String]) -> i32 {
    match run(argv) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flint: {e}");
            1
        }
    }
}

fn flag(args: &mut Vec<String>, name: &str) -> bool {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    }
}

fn value(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    match args.iter().position(|a| a == name) {
        Some(i) if i + 1 < args.len() => {
            let v = args.remove(i + 1);
            args.remove(i);
            Ok(Some(v))
        }
        Some(_) => Err(format!("{name} needs a value")),
        None => Ok(None),
    }
}

fn run(argv: &[String]) -> Result<(), String> {
    let mut o = parse(argv)?;
    let cfg = match &o.config {
        Some(p) => Some(ApplianceConfig::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    if o.token.is_none() {
        o.token = cfg.as_ref().and_then(|c| c.server.token.clone());
    }
    let mut args = std::mem::take(&mut o.args);
    if args.is_empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
        print!("{USAGE}");
        return Ok(());
    }
    let cmd = args.remove(0);
    if cmd != "serve" && cmd != "mount" {
        // A command whose output is cut short (`flint ... | head`) ends
        // quietly, as Unix tools do, instead of panicking on EPIPE.
        // SAFETY: restoring SIGPIPE's default disposition has no
        // precondition; the node (`serve`) and the mount keep ignoring it.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let need_cfg = || {
        cfg.as_ref()
            .ok_or_else(|| format!("`flint {cmd}` needs --config FILE"))
    };
    match cmd.as_str() {
        "serve" => {
            let opts = ServeOptions {
                init: flag(&mut args, "--init"),
                format: flag(&mut args, "--format"),
                force: flag(&mut args, "--force"),
            };
            no_more(&args)?;
            init_logging();
            serve::serve(need_cfg()?, opts)
        }
        "format" => {
            let force = flag(&mut args, "--force");
            no_more(&args)?;
            serve::format(need_cfg()?, force, !o.json)?;
            if o.json {
                println!("{}", json!({"formatted": true}));
            }
            Ok(())
        }
        "cluster" => cluster::command(cfg.as_ref(), o.json, args),
        "put" | "get" | "ls" | "stat" | "mkdir" | "mv" | "rm" => {
            data_cmd(&o, cfg.as_ref(), &cmd, args)
        }
        #[cfg(feature = "mount")]
        "mount" => mount_cmd(cfg.as_ref(), argv, args),
        #[cfg(feature = "mount")]
        "umount" => {
            let lazy = flag(&mut args, "-l");
            let [path] = &args[..] else {
                return Err("usage: flint umount [-l] MOUNTPOINT".into());
            };
            crate::mount::umount(std::path::Path::new(path), lazy)
        }
        _ => {
            let addr = match (&o.addr, &cfg) {
                (Some(a), _) => a.clone(),
                (None, Some(c)) => c.server.mgmt_addr.clone(),
                (None, None) => "127.0.0.1:7480".to_string(),
            };
            let api = Api {
                addr,
                token: o.token.clone(),
            };
            let in_cluster = cmd == "status" && cfg.as_ref().is_some_and(|c| c.cluster.is_some());
            mgmt_cmd(&api, o.json, &cmd, args)?;
            if in_cluster && !o.json {
                cluster::command(cfg.as_ref(), false, vec!["status".into()])?;
            }
            Ok(())
        }
    }
}

/// Takes the next positional argument of `cmd`, or says what it needs.
fn need(args: &mut Vec<String>, cmd: &str, what: &str) -> Result<String, String> {
    if args.is_empty() {
        return Err(format!("{cmd} needs {what}"));
    }
    Ok(args.remove(0))
}

/// Prints an API answer as indented JSON (`--json`).
fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn no_more(args: &[String]) -> Result<(), String> {
    match args.first() {
        Some(a) => Err(format!("unexpected argument `{a}` (see flint help)")),
        None => Ok(()),
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

struct Api {
    addr: String,
    token: Option<String>,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request {
            addr: &self.addr,
            method,
            path,
            token: self.token.as_deref(),
            body: body.as_bytes(),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(600),
        };
        let resp = http::call(&req).map_err(|e| match e {
            http::HttpError::Connect(e) => {
                format!("cannot reach the management API: {e} (is `flint serve` running?)")
            }
            e => e.to_string(),
        })?;
        let body = String::from_utf8_lossy(&resp.body);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.to_string()));
        if resp.status >= 400 {
            let why = v.get("error").and_then(Value::as_str).unwrap_or(&body);
            return Err(format!("{why} (HTTP {})", resp.status));
        }
        Ok(v)
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

fn bytes(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0) as f64;
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = n;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n:.0} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        x => x.to_string(),
    }
}

fn progress(done: u64, total: u64, what: &str) {
    let total = total.max(1);
    let filled = (done * 20 / total) as usize;
    eprint!(
        "\r{what} [{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(20 - filled.min(20))
    );
    let _ = std::io::stderr().flush();
}

fn mgmt_cmd(api: &Api, json_out: bool, cmd: &str, mut args: Vec<String>) -> Result<(), String> {
    let sub =
        |args: &mut Vec<String>| -> Option<String> { (!args.is_empty()).then(|| args.remove(0)) };
    match (cmd, sub(&mut args).as_deref()) {
        ("status", None) => {
            let v = api.call("GET", "/v1/status", None)?;
            if json_out {
                print(&v);
            } else {
                let sp = &v["space"];
                println!("flint {} up {}s", s(&v["version"]), s(&v["uptime_s"]));
                println!(
                    "shards {} on {} reactors (map epoch {}), {} sessions",
                    s(&v["shards"]),
                    s(&v["reactors"]),
                    s(&v["epoch"]),
                    s(&v["sessions"])
                );
                println!(
                    "devices {}/{} healthy",
                    s(&v["devices_healthy"]),
                    s(&v["devices"])
                );
                println!(
                    "space: {} logical, {} physical of {}, dedup {:.2}x, compression {:.2}x",
                    bytes(&sp["logical"]),
                    bytes(&sp["physical"]),
                    bytes(&sp["capacity"]),
                    sp["dedup_ratio"].as_f64().unwrap_or(1.0),
                    sp["compression_ratio"].as_f64().unwrap_or(1.0)
                );
                println!(
                    "snapshots {}, filesystem groups {}, quotas {} ({} in grace, {} counting)",
                    s(&v["snapshots"]),
                    s(&v["groups"]),
                    s(&v["quotas"]),
                    s(&v["quotas_in_grace"]),
                    s(&v["quotas_counting"])
                );
            }
            Ok(())
        }
        ("device", Some("list")) => {
            let v = api.call("GET", "/v1/devices", None)?;
            if json_out {
                print(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    vec![
                        s(&d["index"]),
                        s(&d["name"]),
                        if d["healthy"].as_bool() == Some(true) {
                            "healthy".into()
                        } else if d["present"].as_bool() == Some(true) {
                            "FAILED".into()
                        } else {
                            "MISSING".into()
                        },
                        s(&d["errors"]),
                        bytes(&d["capacity"]),
                        bytes(&d["free"]),
                    ]
                })
                .collect();
            table(&["#", "name", "state", "errors", "capacity", "free"], rows);
            Ok(())
        }
        ("fs", Some("list")) => {
            let v = api.call("GET", "/v1/fs", None)?;
            if json_out {
                print(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|f| {
                    vec![
                        s(&f["name"]),
                        format!("{}+{}", s(&f["k"]), s(&f["m"])),
                        if f["reduction"].as_bool() == Some(true) {
                            "on"
                        } else {
                            "off"
                        }
                        .into(),
                        bytes(&f["used"]),
                        bytes(&f["capacity"]),
                        s(&f["ack"]),
                        s(&f["org"]),
                        s(&f["group"]),
                        s(&f["snapshots"]),
                        s(&f["quotas"]),
                    ]
                })
                .collect();
            table(
                &[
                    "name",
                    "protection",
                    "reduction",
                    "used",
                    "capacity",
                    "ack",
                    "org",
                    "group",
                    "snapshots",
                    "quotas",
                ],
                rows,
            );
            Ok(())
        }
        ("device", Some("replace")) => {
            let name =
                sub(&mut args).ok_or("device replace needs a NAME (a device in the config)")?;
            let force = flag(&mut args, "--force");
            no_more(&args)?;
            let v = api.call(
                "POST",
                &format!("/v1/devices/{name}/replace"),
                Some(json!({ "force": force })),
            )?;
            if json_out {
                print(&v);
            } else {
                println!(
                    "device {name} replaced slot {}: {} chunks rebuilt onto it",
                    s(&v["index"]),
                    s(&v["chunks"])
                );
            }
            Ok(())
        }
        ("fs", Some("create")) => {
            let name = sub(&mut args).ok_or("fs create needs a NAME")?;
            let k = value(&mut args, "--k")?.ok_or("fs create needs --k")?;
            let m = value(&mut args, "--m")?.ok_or("fs create needs --m")?;
            let cap =
                value(&mut args, "--capacity")?.ok_or("fs create needs --capacity (e.g. 10GiB)")?;
            let org = value(&mut args, "--org")?.ok_or("fs create needs --org")?;
            let reduction = !flag(&mut args, "--no-reduction");
            let write_back = flag(&mut args, "--write-back");
            let group = value(&mut args, "--group")?;
            no_more(&args)?;
            let k: u64 = k.parse().map_err(|_| "--k must be a number")?;
            let m: u64 = m.parse().map_err(|_| "--m must be a number")?;
            let v = api.call(
                "POST",
                "/v1/fs",
                Some(
                    json!({"name": name, "k": k, "m": m, "capacity": cap, "org": org,
                    "reduction": reduction, "write_back": write_back, "group": group}),
                ),
            )?;
            if json_out {
                print(&v);
            } else {
                println!(
                    "file system {name} created ({k}+{m}, reduction {}, acknowledged {})",
                    if reduction { "on" } else { "off" },
                    if write_back {
                        "before durable (write-back)"
                    } else {
                        "once durable"
                    }
                );
            }
            Ok(())
        }
        ("fs", Some("update")) => {
            let name = sub(&mut args).ok_or("fs update needs a NAME")?;
            let cap = value(&mut args, "--capacity")?.ok_or("fs update needs --capacity")?;
            no_more(&args)?;
            let v = api.call(
                "PATCH",
                &format!("/v1/fs/{name}"),
                Some(json!({"capacity": cap})),
            )?;
            if json_out {
                print(&v);
            } else {
                println!("file system {name}: capacity {cap}");
            }
            Ok(())
        }
        ("fs", Some("snapshot")) => snapshots::command(api, json_out, args),
        ("fs", Some("quota")) => quotas::command(api, json_out, args),
        ("fs", Some("group")) => groups::command(api, json_out, args),
        ("fs", Some("delete")) => {
            let name = sub(&mut args).ok_or("fs delete needs a NAME")?;
            no_more(&args)?;
            let v = api.call("DELETE", &format!("/v1/fs/{name}"), None)?;
            if json_out {
                print(&v);
            } else {
                println!("file system {name} deleted");
            }
            Ok(())
        }
        ("org", Some("create")) => {
            let name = sub(&mut args).ok_or("org create needs a NAME")?;
            no_more(&args)?;
            let v = api.call("POST", "/v1/orgs", Some(json!({"name": name})))?;
            if json_out {
                print(&v);
            } else {
                println!("organization {name} created; its key (shown once, keep it secret):");
                println!("{}", s(&v["key"]));
            }
            Ok(())
        }
        ("org", Some("list")) => {
            let v = api.call("GET", "/v1/orgs", None)?;
            if json_out {
                print(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|o| vec![s(&o["id"]), s(&o["name"])])
                .collect();
            table(&["id", "name"], rows);
            Ok(())
        }
        ("stats", None) => {
            let watch = flag(&mut args, "--watch");
            no_more(&args)?;
            let mut last: Option<(std::time::Instant, Value)> = None;
            loop {
                let v = api.call("GET", "/v1/stats", None)?;
                if json_out {
                    print(&v);
                } else {
                    // Rates: since the last look with --watch, else since
                    // the node started.
                    let rate = |op: &str, x: &Value, key: &str, per_s: &str| -> f64 {
                        match &last {
                            Some((t, prev)) => {
                                let d = x[key]
                                    .as_u64()
                                    .unwrap_or(0)
                                    .saturating_sub(prev["ops"][op][key].as_u64().unwrap_or(0));
                                d as f64 / t.elapsed().as_secs_f64().max(1e-3)
                            }
                            None => x[per_s].as_f64().unwrap_or(0.0),
                        }
                    };
                    let mut rows = Vec::new();
                    if let Some(ops) = v["ops"].as_object() {
                        for (op, x) in ops {
                            rows.push(vec![
                                op.clone(),
                                s(&x["count"]),
                                format!("{:.0}/s", rate(op, x, "count", "ops_per_s")),
                                format!(
                                    "{}/s",
                                    bytes(&json!(rate(op, x, "bytes", "bytes_per_s") as u64))
                                ),
                                format!("{} us", s(&x["p50_us"])),
                                format!("{} us", s(&x["p99_us"])),
                                format!("{} us", s(&x["p999_us"])),
                            ]);
                        }
                    }
                    table(
                        &["op", "count", "ops", "throughput", "p50", "p99", "p99.9"],
                        rows,
                    );
                    if let Some(c) = v["protocol"].as_object() {
                        let line: Vec<String> = c
                            .iter()
                            .filter(|(_, n)| n.as_u64() != Some(0))
                            .map(|(k, n)| format!("{k}={n}"))
                            .collect();
                        println!("protocol: {}", line.join(" "));
                    }
                }
                if !watch {
                    return Ok(());
                }
                last = Some((std::time::Instant::now(), v));
                std::thread::sleep(Duration::from_secs(2));
                println!();
            }
        }
        ("events", None) => {
            let since = value(&mut args, "--since")?.unwrap_or_else(|| "0".into());
            no_more(&args)?;
            let v = api.call("GET", &format!("/v1/events?since={since}"), None)?;
            if json_out {
                print(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    vec![
                        s(&e["seq"]),
                        s(&e["time"]),
                        s(&e["level"]),
                        s(&e["kind"]),
                        s(&e["message"]),
                    ]
                })
                .collect();
            table(&["seq", "time", "level", "kind", "message"], rows);
            Ok(())
        }
        ("scrub", None) => {
            no_more(&args)?;
            let v = api.call("POST", "/v1/scrub", None)?;
            let id = v["job"].as_u64().ok_or("the API did not return a job")?;
            loop {
                let j = api.call("GET", &format!("/v1/jobs/{id}"), None)?;
                if !json_out {
                    progress(
                        j["done"].as_u64().unwrap_or(0),
                        j["total"].as_u64().unwrap_or(1),
                        "scrub",
                    );
                }
                match j["state"].as_str() {
                    Some("done") => {
                        if json_out {
                            print(&j);
                        } else {
                            eprintln!();
                            println!("{}", s(&j["message"]));
                        }
                        return Ok(());
                    }
                    Some("failed") => {
                        eprintln!();
                        return Err(format!("scrub failed: {}", s(&j["message"])));
                    }
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        (c, sc) => Err(format!(
            "unknown command `{c}{}` (see flint help)",
            sc.map(|x| format!(" {x}")).unwrap_or_default()
        )),
    }
}

fn data_cmd(
    o: &Opts,
    cfg: Option<&ApplianceConfig>,
    cmd: &str,
    mut args: Vec<String>,
) -> Result<(), String> {
    let cfg =
        cfg.ok_or_else(|| format!("`flint {cmd}` needs --config FILE (for the data address)"))?;
    let org_arg = value(&mut args, "--org")?;
    let key_arg = value(&mut args, "--key-file")?.map(PathBuf::from);
    let org = org_arg
        .or_else(|| cfg.orgs.first().map(|x| x.name.clone()))
        .ok_or("no organization: pass --org")?;
    let key_file = key_arg
        .or_else(|| {
            cfg.orgs
                .iter()
                .find(|x| x.name == org)
                .map(|x| x.key_file.clone())
        })
        .ok_or("no key: pass --key-file")?;
    let key_text = std::fs::read_to_string(&key_file)
        .map_err(|e| format!("cannot read key file {}: {e}", key_file.display()))?;
    let key = auth::key_from_hex(&key_text)
        .ok_or_else(|| format!("{} does not hold a 64-hex-digit key", key_file.display()))?;
    let addr = cfg.data_addr().map_err(|e| e.to_string())?;
    let mut c =
        Client::connect(addr, &org, &key, ClientConfig::default()).map_err(|e| e.to_string())?;
    let target = if args.is_empty() {
        return Err(format!("`flint {cmd}` needs a target (see flint help)"));
    } else {
        args.remove(0)
    };
    let split = |t: &str| -> Result<(String, String), String> {
        let (fs, path) = t.split_once('/').unwrap_or((t, ""));
        Ok((fs.to_string(), path.to_string()))
    };
    let named = |t: &str| -> Result<(String, String), String> {
        match split(t)? {
            (_, p) if p.is_empty() => Err(format!("{t}: the target is FS/PATH")),
            x => Ok(x),
        }
    };
    match cmd {
        "ls" => {
            let (fs, dir) = split(&target)?;
            let files = c
                .list_dir(&fs, &dir)
                .map_err(|e| format!("{target}: {e}"))?;
            if o.json {
                let v: Vec<Value> = files.iter().map(stat_json).collect();
                println!("{}", Value::Array(v));
            } else {
                table(
                    &["name", "kind", "mode", "links", "size"],
                    files
                        .iter()
                        .map(|f| {
                            vec![
                                f.name.clone(),
                                kind_name(f.mode).into(),
                                format!("{:o}", f.mode & 0o7777),
                                f.nlink.to_string(),
                                bytes(&json!(f.size)),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
        "stat" => {
            let (fs, path) = split(&target)?;
            let f = c
                .stat_path(&fs, &path)
                .map_err(|e| format!("{target}: {e}"))?;
            if o.json {
                println!("{}", stat_json(&f));
            } else {
                table(
                    &["field", "value"],
                    vec![
                        vec!["ino".into(), format!("{:#x}", f.ino)],
                        vec!["kind".into(), kind_name(f.mode).into()],
                        vec!["mode".into(), format!("{:o}", f.mode & 0o7777)],
                        vec!["links".into(), f.nlink.to_string()],
                        vec!["owner".into(), format!("{}:{}", f.uid, f.gid)],
                        vec!["size".into(), bytes(&json!(f.size))],
                        vec!["blocks".into(), f.blocks.to_string()],
                        vec!["mtime (ns)".into(), f.mtime.to_string()],
                        vec!["ctime (ns)".into(), f.ctime.to_string()],
                    ],
                );
            }
            Ok(())
        }
        "mkdir" => {
            let (fs, path) = named(&target)?;
            c.mkdir(&fs, &path, 0o755)
                .map_err(|e| format!("{target}: {e}"))?;
            say(o, json!({"created": target}), &format!("{target}: created"));
            Ok(())
        }
        "mv" => {
            let (fs, from) = named(&target)?;
            let to = args.first().ok_or("mv needs a target path TO")?;
            let to = to.strip_prefix(&format!("{fs}/")).unwrap_or(to);
            c.rename(&fs, &from, to, 0)
                .map_err(|e| format!("{target} -> {to}: {e}"))?;
            say(
                o,
                json!({"renamed": target, "to": to}),
                &format!("{target} -> {fs}/{to}"),
            );
            Ok(())
        }
        "rm" => {
            let (fs, path) = named(&target)?;
            let r = match c.unlink(&fs, &path) {
                Err(e) if e.errno() == -libc::EISDIR => c.rmdir(&fs, &path),
                r => r,
            };
            r.map_err(|e| format!("{target}: {e}"))?;
            say(o, json!({"removed": target}), &format!("{target}: removed"));
            Ok(())
        }
        "put" => {
            let (fs, name) = target.split_once('/').ok_or("the target is FS/PATH")?;
            let file = args.first().ok_or("put needs a FILE")?;
            let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let (ino, _) = c
                .open(fs, name, true)
                .map_err(|e| format!("{target}: {e}"))?;
            c.truncate(ino, 0).map_err(|e| e.to_string())?;
            for (i, chunk) in data.chunks(1 << 20).enumerate() {
                c.write(ino, (i << 20) as u64, chunk)
                    .map_err(|e| e.to_string())?;
            }
            c.sync().map_err(|e| e.to_string())?;
            println!("{target}: {} bytes written and synced", data.len());
            Ok(())
        }
        _ => {
            let (fs, name) = target.split_once('/').ok_or("the target is FS/PATH")?;
            let (ino, size) = c
                .open(fs, name, false)
                .map_err(|e| format!("{target}: {e}"))?;
            let mut out = Vec::with_capacity(size as usize);
            while (out.len() as u64) < size {
                let n = (size - out.len() as u64).min(1 << 20) as usize;
                out.extend(
                    c.read(ino, out.len() as u64, n)
                        .map_err(|e| e.to_string())?,
                );
            }
            match args.first() {
                Some(f) => std::fs::write(f, &out).map_err(|e| format!("{f}: {e}"))?,
                None => std::io::stdout()
                    .write_all(&out)
                    .map_err(|e| e.to_string())?,
            }
            Ok(())
        }
    }
}

/// A file type's name for tables.
fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFREG => "file",
        _ => "special",
    }
}

/// An entry's attributes as JSON.
fn stat_json(f: &crate::net::wire::FileStat) -> Value {
    json!({
        "ino": f.ino, "name": f.name, "kind": kind_name(f.mode), "mode": f.mode & 0o7777,
        "nlink": f.nlink, "uid": f.uid, "gid": f.gid, "size": f.size, "blocks": f.blocks,
        "atime_ns": f.atime, "mtime_ns": f.mtime, "ctime_ns": f.ctime,
    })
}

/// Prints a result: JSON with --json, else the sentence.
fn say(o: &Opts, v: Value, text: &str) {
    if o.json {
        println!("{v}");
    } else {
        println!("{text}");
    }
}

/// `flint mount`: parses the command (the config filling in the address,
/// organization and key), then mounts in the foreground or as a daemon.
#[cfg(feature = "mount")]
fn mount_cmd(
    cfg: Option<&ApplianceConfig>,
    argv: &[String],
    mut args: Vec<String>,
) -> Result<(), String> {
    let foreground = flag(&mut args, "-f");
    let mut opts = Vec::new();
    while let Some(o) = value(&mut args, "-o")? {
        opts.push(o);
    }
    let [spec, mountpoint] = &args[..] else {
        return Err("usage: flint mount [HOST:PORT]/FS MOUNTPOINT [-f] [-o OPT,...]".into());
    };
    let spec = match (spec.strip_prefix('/'), cfg) {
        (Some(fs), Some(c)) => format!("{}/{fs}", c.data_addr().map_err(|e| e.to_string())?),
        (Some(_), None) => return Err(format!("`{spec}`: without --config give HOST:PORT/FS")),
        _ => spec.clone(),
    };
    let mut o = crate::mount::MountOptions::parse(&spec, mountpoint, &opts, foreground)?;
    if let Some(c) = cfg {
        let first = c.orgs.first();
        if o.org.is_none() {
            o.org = first.map(|x| x.name.clone());
        }
        if o.key_file.is_none() {
            o.key_file = c
                .orgs
                .iter()
                .find(|x| Some(&x.name) == o.org.as_ref())
                .map(|x| x.key_file.clone());
        }
    }
    if !o.foreground {
        return crate::mount::daemonize(&o, argv);
    }
    init_logging();
    crate::mount::run(&o)
}
