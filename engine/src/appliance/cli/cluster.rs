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
            ]
        })
        .collect();
    table(
        &[
            "id", "state", "member", "data", "cores", "devices", "shards",
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
            no_more(&args)?;
            let st = read(&mut w)?;
            let members: Vec<NodeId> = match nodes {
                Some(list) => list.split(',').map(node_id).collect::<Result<_, _>>()?,
                None => st.nodes.keys().copied().collect(),
            };
            if members.is_empty() {
                return Err("no nodes are registered yet: start them (flint serve with [cluster]) or name them with --nodes 1,2,3".into());
            }
            let doc = serde_json::to_vec(&ClusterDoc { shards }).expect("doc serializes");
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
        other => Err(format!(
            "unknown `cluster {other}` (try: create, status, host list, add, remove, maint)"
        )),
    }
}
