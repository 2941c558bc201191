//! `flint cluster create|status|host list|add|remove|maint`: the cluster's
//! state, read from and written to etcd directly (the members the config's
//! `[cluster] etcd` names, or `--etcd`), so it works with any node down.
//! The CLI writes only the config document and the members; the map is
//! the coordinator's alone.

use std::time::Duration;

use serde_json::{json, Value};

use super::{need, no_more, print, table, value};
use crate::appliance::config::ApplianceConfig;
use crate::cluster::etcd::Etcd;
use crate::cluster::keys::{ClusterDoc, Keys, State};
use crate::cluster::kv::{Compare, Kv, Op, Target, Txn};
use crate::cluster::map::{Membership, NodeId, NodeState};
use crate::net::client::{Client, ClientConfig, ClientError};

/// Where the cluster's state is: etcd members and the cluster's name.
struct Where {
    etcd: Etcd,
    keys: Keys,
    name: String,
}

fn locate(cfg: Option<&ApplianceConfig>, args: &mut Vec<String>) -> Result<Where, String> {
    let flag_etcd = value(args, "--etcd")?;
    let flag_name = value(args, "--cluster")?;
    let section = cfg.and_then(|c| c.cluster.as_ref());
    let endpoints: Vec<String> = match (&flag_etcd, section) {
        (Some(e), _) => e.split(',').map(str::to_string).collect(),
        (None, Some(c)) => c.etcd.clone(),
        (None, None) => {
            return Err(
                "`flint cluster` needs etcd: --etcd HOST:PORT[,...] or a config with [cluster]"
                    .into(),
            )
        }
    };
    let name = flag_name
        .or_else(|| section.map(|c| c.name.clone()))
        .unwrap_or_else(|| "flint".into());
    Ok(Where {
        etcd: Etcd::new(&endpoints, Duration::from_secs(3)),
        keys: Keys::new(&name),
        name,
    })
}

fn node_id(s: &str) -> Result<NodeId, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a node id (1, 2, ...)"))
}

fn read(w: &mut Where) -> Result<State, String> {
    State::read(&mut w.etcd, &w.keys).map_err(|e| e.to_string())
}

/// The cluster as JSON: what `status` and `host list` show.
fn describe(w: &Where, st: &State) -> Value {
    let map = st.map.as_ref();
    let load = map.map(|m| m.load()).unwrap_or_default();
    let mut ids: Vec<NodeId> = st.members.keys().copied().collect();
    ids.extend(st.nodes.keys());
    ids.extend(map.into_iter().flat_map(|m| m.nodes.keys().copied()));
    ids.sort_unstable();
    ids.dedup();
    let hosts: Vec<Value> = ids
        .iter()
        .map(|id| {
            let rec = st.nodes.get(id).map(|(r, _)| r);
            let state = match (map.and_then(|m| m.nodes.get(id)), rec) {
                (Some(n), _) => match n.state {
                    NodeState::Active => "active",
                    NodeState::Maint => "maint",
                    NodeState::Draining => "draining",
                    NodeState::Down => "down",
                },
                (None, Some(_)) => "pending",
                (None, None) => "down",
            };
            json!({
                "id": id,
                "state": state,
                "member": st.members.get(id),
                "alive": rec.is_some(),
                "data_addr": rec.map(|r| r.data_addr.clone()),
                "mgmt_addr": rec.map(|r| r.mgmt_addr.clone()),
                "cores": rec.map(|r| r.cores),
                "devices": rec.map(|r| r.devices),
                "shards": load.get(id).copied().unwrap_or(0),
                "slices": map.map_or(0, |m| m.shards.iter().flat_map(|p| &p.group).filter(|n| *n == id).count()),
            })
        })
        .collect();
    let coordinator = st
        .coordinator
        .as_ref()
        .and_then(|c| std::str::from_utf8(&c.value).ok()?.parse::<u32>().ok());
    json!({
        "name": w.name,
        "created": st.config.is_some(),
        "shards": st.config.map_or(0, |c| c.shards),
        "epoch": map.map_or(0, |m| m.epoch),
        "coordinator": coordinator,
        "handoffs": map.map_or(0, |m| m.shards.iter().filter(|p| p.moving_to.is_some()).count()),
        "buckets": st.config.is_some_and(|c| c.k > 0),
        "stale_slots": st.stale_slots,
        "vacant_slots": map.map_or(0, |m| m.shards.iter().flat_map(|p| &p.group).filter(|n| **n == crate::cluster::map::VACANT).count()),
        "hosts": hosts,
        "unreadable_keys": st.unreadable,
        "revision": st.revision,
    })
}

fn print_status(v: &Value) {
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    let up = hosts.iter().filter(|h| h["alive"] == json!(true)).count();
    if v["created"] != json!(true) {
        println!(
            "cluster {}: not created ({} nodes registered; `flint cluster create --shards N`)",
            super::s(&v["name"]),
            up
        );
        return;
    }
    println!(
        "cluster {}: map epoch {}, {} shards, coordinator node {}",
        super::s(&v["name"]),
        super::s(&v["epoch"]),
        super::s(&v["shards"]),
        super::s(&v["coordinator"])
    );
    println!(
        "hosts: {up} up of {}; shards moving: {}",
        hosts.len(),
        super::s(&v["handoffs"])
    );
    if v["buckets"] == json!(true) {
        println!(
            "buckets: slices that missed writes, to rebuild: {}; slots vacated by nodes that left: {}",
            super::s(&v["stale_slots"]),
            super::s(&v["vacant_slots"])
        );
    }
    if let Some(bad) = v["unreadable_keys"].as_array().filter(|b| !b.is_empty()) {
        println!("warning: unreadable keys under the prefix: {bad:?}");
    }
}

fn print_hosts(v: &Value) {
    let rows = v["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            vec![
                super::s(&h["id"]),
                super::s(&h["state"]),
                super::s(&h["member"]),
                super::s(&h["data_addr"]),
                super::s(&h["cores"]),
                super::s(&h["devices"]),
                super::s(&h["shards"]),
                super::s(&h["slices"]),
            ]
        })
        .collect();
    table(
        &[
            "id", "state", "member", "data", "cores", "devices", "shards", "slices",
        ],
        rows,
    );
}

fn set_member(w: &mut Where, id: NodeId, m: Membership) -> Result<(), String> {
    let st = read(w)?;
    if st.config.is_none() {
        return Err(format!(
            "cluster {} is not created (flint cluster create --shards N)",
            w.name
        ));
    }
    let v = serde_json::to_vec(&m).expect("membership serializes");
    w.etcd
        .put(&w.keys.member(id), &v, 0)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs `cluster SUB ...`; `status` also serves `flint status`.
pub(super) fn command(
    cfg: Option<&ApplianceConfig>,
    json_out: bool,
    mut args: Vec<String>,
) -> Result<(), String> {
    let mut w = locate(cfg, &mut args)?;
    let sub = need(
        &mut args,
        "cluster",
        "create, status, host list, add, remove or maint",
    )?;
    match sub.as_str() {
        "create" => {
            let shards: u32 = value(&mut args, "--shards")?
                .ok_or("cluster create needs --shards N (e.g. 8 per node)")?
                .parse()
                .map_err(|_| "--shards takes a number".to_string())?;
            if shards == 0 || shards > 65_536 {
                return Err(format!("--shards {shards} is out of range (1..=65536)"));
            }
            let nodes = value(&mut args, "--nodes")?;
            let k: u8 = value(&mut args, "--k")?.map_or(Ok(0), |v| v.parse()).map_err(|_| "--k takes a number".to_string())?;
            let m: u8 = value(&mut args, "--m")?.map_or(Ok(0), |v| v.parse()).map_err(|_| "--m takes a number".to_string())?;
            if (k == 0) != (m == 0) {
                return Err("buckets need both --k and --m (data and parity chunks per stripe)".into());
            }
            no_more(&args)?;
            let st = read(&mut w)?;
            let members: Vec<NodeId> = match nodes {
                Some(list) => list.split(',').map(node_id).collect::<Result<_, _>>()?,
                None => st.nodes.keys().copied().collect(),
            };
            let width = usize::from(k) + usize::from(m);
            if k > 0 && width > members.len() {
                return Err(format!(
                    "--k {k} --m {m} puts each stripe's {width} chunks on {width} distinct nodes; \
                     there are {} members (writes go on with a node lost when k+m < nodes)",
                    members.len()
                ));
            }
            if members.is_empty() {
                return Err("no nodes are registered yet: start them (flint serve with [cluster]) or name them with --nodes 1,2,3".into());
            }
            let doc = serde_json::to_vec(&ClusterDoc { shards, k, m }).expect("doc serializes");
            let active = serde_json::to_vec(&Membership::Active).expect("serializes");
            let mut success = vec![Op::Put {
                key: w.keys.config(),
                value: doc,
                lease: 0,
            }];
            for id in &members {
                success.push(Op::Put {
                    key: w.keys.member(*id),
                    value: active.clone(),
                    lease: 0,
                });
            }
            let txn = Txn {
                compare: vec![Compare {
                    key: w.keys.config(),
                    target: Target::Create(0),
                }],
                success,
                failure: vec![],
            };
            if !w.etcd.txn(&txn).map_err(|e| e.to_string())?.succeeded {
                return Err(format!(
                    "cluster {} already exists (flint cluster status)",
                    w.name
                ));
            }
            if json_out {
                println!(
                    "{}",
                    json!({"created": w.name, "shards": shards, "members": members})
                );
            } else {
                println!(
                    "created cluster {} with {shards} shards; members {members:?}",
                    w.name
                );
            }
            Ok(())
        }
        "status" => {
            no_more(&args)?;
            let st = read(&mut w)?;
            let v = describe(&w, &st);
            if json_out {
                print(&v);
            } else {
                print_status(&v);
            }
            Ok(())
        }
        "host" => {
            let what = need(&mut args, "cluster host", "list")?;
            if what != "list" {
                return Err(format!(
                    "unknown `cluster host {what}` (try: cluster host list)"
                ));
            }
            no_more(&args)?;
            let st = read(&mut w)?;
            let v = describe(&w, &st);
            if json_out {
                print(&v["hosts"]);
            } else {
                print_hosts(&v);
            }
            Ok(())
        }
        "add" | "remove" | "maint" => {
            let id = node_id(&need(&mut args, &format!("cluster {sub}"), "a node id")?)?;
            let off = sub == "maint" && super::flag(&mut args, "--off");
            no_more(&args)?;
            let m = match (sub.as_str(), off) {
                ("remove", _) => Membership::Remove,
                ("maint", false) => Membership::Maint,
                _ => Membership::Active,
            };
            set_member(&mut w, id, m)?;
            let said = match m {
                Membership::Active => "a member",
                Membership::Maint => "in maintenance (a restart rebuilds nothing)",
                Membership::Remove => "being removed (its shards move off one at a time)",
            };
            if json_out {
                println!("{}", json!({"node": id, "member": m}));
            } else {
                println!("node {id} is {said}");
            }
            Ok(())
        }
        "put" | "get" => data(&mut w, cfg, json_out, &sub, args),
        other => Err(format!(
            "unknown `cluster {other}` (try: create, status, host list, add, remove, maint, put, get)"
        )),
    }
}

/// How long `cluster put|get` keeps trying (a bucket moving to another
/// node after a failure is served again within the lease TTL and its
/// opening).
const DATA_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `f` against the node serving `name`'s bucket, following the
/// bucket when it moves: on any failure the address is read again from
/// etcd and `f` runs again (it must be idempotent), until [`DATA_PATIENCE`].
fn with_bucket<T>(
    w: &mut Where,
    key: &crate::net::auth::Key,
    name: &str,
    mut f: impl FnMut(&mut Client) -> Result<T, ClientError>,
) -> Result<T, String> {
    let st = read(w)?;
    let doc = st
        .config
        .ok_or_else(|| format!("cluster {} is not created", w.name))?;
    if doc.k == 0 {
        return Err(format!(
            "cluster {} has no buckets (created without --k/--m)",
            w.name
        ));
    }
    let shard = crate::cluster::buckets::bucket_of(name, doc.shards);
    let start = std::time::Instant::now();
    let mut last = String::from("no node serves it yet");
    while start.elapsed() < DATA_PATIENCE {
        let addr = w
            .etcd
            .range(&w.keys.bucket(shard), false)
            .ok()
            .and_then(|r| r.kvs.into_iter().next())
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()));
        if let Some(addr) = addr {
            // A node that stopped answering is given up on quickly: the
            // bucket's address is read again and the call goes where it is.
            let cfg = ClientConfig {
                timeout: Duration::from_secs(1),
                ..ClientConfig::default()
            };
            match Client::connect(addr, crate::cluster::buckets::BUCKET_FS, key, cfg)
                .and_then(|mut c| f(&mut c))
            {
                Ok(v) => return Ok(v),
                Err(ClientError::Status(c)) if c == -libc::ENOENT => {
                    return Err(format!("{name}: no such file"))
                }
                Err(e) => last = format!("bucket {shard} at {addr}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "{last} (gave up after {} s)",
        DATA_PATIENCE.as_secs()
    ))
}

/// `cluster put FS/NAME FILE` and `cluster get FS/NAME [FILE]`: a file of
/// the cluster's file system, in the bucket its name hashes to.
fn data(
    w: &mut Where,
    cfg: Option<&ApplianceConfig>,
    json_out: bool,
    sub: &str,
    mut args: Vec<String>,
) -> Result<(), String> {
    let key_file = value(&mut args, "--key-file")?
        .map(std::path::PathBuf::from)
        .or_else(|| cfg.and_then(|c| c.cluster.as_ref()?.key_file.clone()))
        .ok_or(
            "`flint cluster put|get` needs the cluster's key: --key-file F or [cluster] key_file",
        )?;
    let text =
        std::fs::read_to_string(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = crate::net::auth::key_from_hex(text.trim())
        .ok_or_else(|| format!("{}: not 64 hex digits", key_file.display()))?;
    let target = need(&mut args, &format!("cluster {sub}"), "FS/NAME")?;
    let (fs, name) = target
        .split_once('/')
        .filter(|(_, n)| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| format!("`{target}` is not FS/NAME"))?;
    let bucket_fs = crate::cluster::buckets::BUCKET_FS;
    if fs != bucket_fs {
        return Err(format!(
            "the cluster's buckets hold one file system, `{bucket_fs}`"
        ));
    }
    if sub == "put" {
        let file = need(&mut args, "cluster put", "a local FILE")?;
        no_more(&args)?;
        let data = std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?;
        with_bucket(w, &key, name, |c| {
            let (ino, _) = c.open(bucket_fs, name, true)?;
            c.truncate(ino, 0)?;
            for (i, part) in data.chunks(1 << 20).enumerate() {
                c.write(ino, (i as u64) << 20, part)?;
            }
            c.sync()
        })?;
        if json_out {
            println!("{}", json!({"put": target, "bytes": data.len()}));
        }
        return Ok(());
    }
    let out = args.first().cloned();
    if out.is_some() {
        args.remove(0);
    }
    no_more(&args)?;
    let data = with_bucket(w, &key, name, |c| {
        let (ino, size) = c.open(bucket_fs, name, false)?;
        let mut data = Vec::with_capacity(size as usize);
        while (data.len() as u64) < size {
            let part = c.read(
                ino,
                data.len() as u64,
                (1 << 20).min((size - data.len() as u64) as usize),
            )?;
            if part.is_empty() {
                break;
            }
            data.extend_from_slice(&part);
        }
        Ok(data)
    })?;
    match out {
        Some(path) => std::fs::write(&path, &data).map_err(|e| format!("{path}: {e}")),
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&data)
                .map_err(|e| e.to_string())
        }
    }
}
