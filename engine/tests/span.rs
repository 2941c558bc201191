//! Namespace operations spanning shards, under power cuts at exact I/Os
//! and SIGKILLs: with four shards a new directory is homed on the shard
//! its parent and name hash to, so mkdir, rmdir, renames and links
//! between directories, and unlinks of renamed files, change the trees of
//! two or more shards through intents.
//!
//! Every operation here is acknowledged only once it is durable (an
//! operation spanning shards is, when it returns; one on a single shard is
//! followed by a sync). After a cut or a kill and recovery, the tree must
//! be the model after the last acknowledged operation, or after the one in
//! flight as well (it is atomic: all of it or none), and the check across
//! shards must find no orphan, no dangling entry, no loop and no wrong
//! link count.

mod common;

use common::{engine, file_devices, memory_devices, present, small_config, Rng};
use flint_dataplane::bdev::fault::{FaultPlan, FaultyDevice};
use flint_dataplane::bdev::BlockDevice;
use flint_engine::engine::Engine;
use flint_engine::meta::namespace::RenameFlags;
use flint_engine::store::{StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a path names: a directory, or a file by its contents' seed (hard
/// links share one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

/// Paths (relative to the test's subtree) to what they name.
type Model = BTreeMap<String, Node>;

/// One operation, chosen so that it succeeds on the model.
#[derive(Debug, Clone)]
enum Op {
    Mkdir(String),
    Create(String, u64),
    Rename(String, String),
    Exchange(String, String),
    Link(String, String),
    Unlink(String),
    Rmdir(String),
}

/// The seed of an empty file: one created whose data was not written yet.
const EMPTY: u64 = u64::MAX;

fn contents(seed: u64) -> Vec<u8> {
    if seed == EMPTY {
        return Vec::new();
    }
    let mut r = Rng(seed * 31 + 7);
    let len = r.below(6000) as usize;
    r.data(len)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn under(p: &str, d: &str) -> bool {
    p == d || p.starts_with(&format!("{d}/"))
}

/// A random operation that succeeds on `m`; `n` numbers fresh names.
fn choose(m: &Model, rng: &mut Rng, n: &mut u64) -> Op {
    let dirs: Vec<String> = std::iter::once(String::new())
        .chain(
            m.iter()
                .filter(|(_, v)| **v == Node::Dir)
                .map(|(p, _)| p.clone()),
        )
        .collect();
    let files: Vec<String> = m
        .iter()
        .filter(|(_, v)| matches!(v, Node::File(_)))
        .map(|(p, _)| p.clone())
        .collect();
    let subdirs = &dirs[1..];
    let pick = |v: &[String], rng: &mut Rng| v[rng.below(v.len() as u64) as usize].clone();
    *n += 1;
    let fresh = |rng: &mut Rng| join(&pick(&dirs, rng), &format!("n{n}"));
    loop {
        match rng.below(12) {
            0..=2 => return Op::Mkdir(fresh(rng)),
            3 | 4 => return Op::Create(fresh(rng), *n),
            5 | 6 if !files.is_empty() => return Op::Rename(pick(&files, rng), fresh(rng)),
            7 if !subdirs.is_empty() => {
                let d = pick(subdirs, rng);
                let to = fresh(rng);
                if !under(&to, &d) {
                    return Op::Rename(d, to);
                }
            }
            8 if files.len() >= 2 => {
                let (a, b) = (pick(&files, rng), pick(&files, rng));
                if a != b {
                    return Op::Exchange(a, b);
                }
            }
            9 if !files.is_empty() => return Op::Link(pick(&files, rng), fresh(rng)),
            10 if !files.is_empty() => return Op::Unlink(pick(&files, rng)),
            11 => {
                let empty: Vec<String> = subdirs
                    .iter()
                    .filter(|d| !m.keys().any(|p| p != *d && under(p, d)))
                    .cloned()
                    .collect();
                if !empty.is_empty() {
                    return Op::Rmdir(pick(&empty, rng));
                }
            }
            _ => {}
        }
    }
}

/// The model after `op`.
fn apply(m: &Model, op: &Op) -> Model {
    let mut m = m.clone();
    match op {
        Op::Mkdir(p) => {
            m.insert(p.clone(), Node::Dir);
        }
        Op::Create(p, seed) => {
            m.insert(p.clone(), Node::File(*seed));
        }
        Op::Rename(from, to) => {
            let moved: Vec<String> = m.keys().filter(|p| under(p, from)).cloned().collect();
            for p in moved {
                let node = m.remove(&p).expect("a model path");
                m.insert(format!("{to}{}", &p[from.len()..]), node);
            }
        }
        Op::Exchange(a, b) => {
            let (x, y) = (m[a].clone(), m[b].clone());
            m.insert(a.clone(), y);
            m.insert(b.clone(), x);
        }
        Op::Link(from, to) => {
            let node = m[from].clone();
            m.insert(to.clone(), node);
        }
        Op::Unlink(p) | Op::Rmdir(p) => {
            m.remove(p);
        }
    }
    m
}

/// The model after `op` cut short where it may leave a state of its own:
/// a create is two steps (the file, then its data), the others are
/// atomic.
fn partial(m: &Model, op: &Op) -> Option<Model> {
    match op {
        Op::Create(p, _) => Some(apply(m, &Op::Create(p.clone(), EMPTY))),
        _ => None,
    }
}

/// Runs `op` under `base`, durably.
fn run(e: &Engine, fs: u32, base: &str, op: &Op) -> Result<(), StoreError> {
    let at = |p: &str| join(base, p);
    match op {
        Op::Mkdir(p) => {
            e.mkdir(fs, &at(p), 0o755)?;
        }
        Op::Create(p, seed) => {
            let ino = e.create(fs, &at(p))?;
            e.write(ino, 0, contents(*seed))?;
        }
        Op::Rename(from, to) => e.rename(fs, &at(from), &at(to), RenameFlags::default())?,
        Op::Exchange(a, b) => e.rename(
            fs,
            &at(a),
            &at(b),
            RenameFlags {
                exchange: true,
                ..RenameFlags::default()
            },
        )?,
        Op::Link(from, to) => {
            e.link(fs, &at(from), &at(to))?;
        }
        Op::Unlink(p) => e.unlink(fs, &at(p))?,
        Op::Rmdir(p) => e.rmdir(fs, &at(p))?,
    }
    e.sync()
}

/// A tree as paths to contents (`None`: a directory).
type Seen = BTreeMap<String, Option<Vec<u8>>>;

/// What the model says the tree holds.
fn expect(m: &Model) -> Seen {
    m.iter()
        .map(|(p, n)| {
            let c = match n {
                Node::Dir => None,
                Node::File(seed) => Some(contents(*seed)),
            };
            (p.clone(), c)
        })
        .collect()
}

/// The tree under `base` as the engine has it.
fn view(e: &Engine, fs: u32, base: &str) -> Result<Seen, StoreError> {
    let mut out = Seen::new();
    let mut dirs = vec![String::new()];
    while let Some(d) = dirs.pop() {
        for st in e.list_dir(fs, &join(base, &d))? {
            let p = join(&d, &st.name);
            if st.mode & libc::S_IFMT == libc::S_IFDIR {
                dirs.push(p.clone());
                out.insert(p, None);
            } else {
                out.insert(p, Some(e.read(st.ino, 0, st.size as usize + 1)?));
            }
        }
    }
    Ok(out)
}

fn clean(e: &Engine) {
    let mut bad: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    bad.extend(e.fsck_names().unwrap());
    assert!(bad.is_empty(), "{bad:?}");
}

/// The model `got` is: one of `candidates` (index), or a panic naming what
/// differs.
fn which(got: &Seen, candidates: &[&Model], what: &str) -> usize {
    let want: Vec<Seen> = candidates.iter().map(|m| expect(m)).collect();
    want.iter().position(|m| m == got).unwrap_or_else(|| {
        let m = &want[0];
        let extra: Vec<_> = got.keys().filter(|k| m.get(*k) != got.get(*k)).collect();
        let missing: Vec<_> = m.keys().filter(|k| got.get(*k) != m.get(*k)).collect();
        panic!("{what}: the tree is no acknowledged state; differs at {extra:?} / {missing:?}")
    })
}

fn two_reactors() -> Engine {
    engine()
}

#[test]
fn power_cuts_during_operations_spanning_shards_keep_them_atomic() {
    let rounds: usize = std::env::var("FLINT_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let plan = Arc::new(FaultPlan::default());
    let devs: Vec<Arc<dyn BlockDevice>> = memory_devices(5, 48)
        .into_iter()
        .map(|d| FaultyDevice::wrap_shared(d, plan.clone()) as Arc<dyn BlockDevice>)
        .collect();
    let mut e = two_reactors();
    let cfg = StoreConfig {
        shards: 4,
        ..small_config()
    };
    e.format(devs.clone(), cfg, false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, false, 1 << 40).unwrap();
    let mut rng = Rng(99);
    let mut model = Model::new();
    let mut n = 0u64;
    let mut spanned = 0;
    for round in 0..rounds {
        plan.fail_after(300 + rng.below(6000) as i64);
        let mut ops = 0;
        let (next, cut) = loop {
            let op = choose(&model, &mut rng, &mut n);
            let next = apply(&model, &op);
            if run(&e, fs, "", &op).is_err() {
                break (next, partial(&model, &op));
            }
            model = next;
            ops += 1;
        };
        eprintln!(
            "round {round}: cut after {ops} operations, {} spanning shards",
            e.names_spanned()
        );
        spanned += e.names_spanned();
        drop(e);
        if rng.below(3) == 0 {
            // Another cut during recovery (while intents are finished).
            plan.fail_after(rng.below(200) as i64);
            let mut again = two_reactors();
            let _ = again.open(present(&devs));
            drop(again);
        }
        plan.clear();
        e = two_reactors();
        e.open(present(&devs)).unwrap();
        clean(&e);
        let got = view(&e, fs, "").unwrap();
        let mut candidates = vec![&model, &next];
        candidates.extend(cut.as_ref());
        match which(&got, &candidates, &format!("round {round}")) {
            0 => {}
            1 => model = next,
            _ => model = cut.expect("a third candidate"),
        }
    }
    let homes: std::collections::BTreeSet<u64> = e
        .list_dir(fs, "")
        .unwrap()
        .iter()
        .filter(|st| st.mode & libc::S_IFMT == libc::S_IFDIR)
        .map(|st| st.ino & 0xff)
        .collect();
    assert!(homes.len() > 1, "directories all on one shard: {homes:?}");
    assert!(spanned > 20, "only {spanned} operations spanned shards");
    e.close().unwrap();
}

const CHILD: &str = "FLINT_SPAN_CHILD_DIR";
const ROUND: &str = "FLINT_SPAN_ROUND";
const DEVICES: usize = 5;
const DEVICE_MIB: u64 = 96;

fn seed_of(round: u64) -> u64 {
    round * 7919 + 5
}

/// The child: operations under `r<round>`, each acknowledged once durable.
fn child(dir: &Path, round: u64) -> ! {
    let devs = file_devices(dir, DEVICES, DEVICE_MIB);
    let mut e = engine();
    e.open_with(present(&devs), Some(Duration::from_millis(20)))
        .expect("child opens the engine");
    let fs = e.fs_by_name("span").unwrap().expect("fs exists");
    let base = format!("r{round}");
    e.mkdir(fs, &base, 0o755).unwrap();
    e.sync().unwrap();
    println!();
    println!("ACK 0");
    let mut rng = Rng(seed_of(round));
    let mut model = Model::new();
    let mut n = 0;
    for k in 1.. {
        let op = choose(&model, &mut rng, &mut n);
        run(&e, fs, &base, &op).unwrap();
        model = apply(&model, &op);
        println!("ACK {k}");
    }
    unreachable!()
}

#[test]
fn operations_spanning_shards_survive_sigkill() {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD), std::env::var(ROUND)) {
        child(Path::new(&dir), round.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let devs = file_devices(dir.path(), DEVICES, DEVICE_MIB);
        let mut e = engine();
        let cfg = StoreConfig {
            shards: 4,
            ..small_config()
        };
        e.format(devs.clone(), cfg, false).unwrap();
        e.open(present(&devs)).unwrap();
        e.fs_create("span", 3, 2, false, 1 << 40).unwrap();
        e.close().unwrap();
    }
    let rounds: u64 = std::env::var("FLINT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut rng = Rng(31337);
    // Each earlier round's subtree as recovered: it must stay so.
    let mut kept: Vec<(String, Model)> = Vec::new();
    let mut acked_total = 0;
    for round in 0..rounds {
        let printed = common::run_and_kill(
            "operations_spanning_shards_survive_sigkill",
            &[
                (CHILD, dir.path().display().to_string()),
                (ROUND, round.to_string()),
            ],
            Duration::from_millis(200 + rng.below(1500)),
        );
        let acked = printed
            .iter()
            .filter_map(|l| l.strip_prefix("ACK ")?.trim().parse::<u64>().ok())
            .max();
        let devs = file_devices(dir.path(), DEVICES, DEVICE_MIB);
        let mut e = engine();
        e.open(present(&devs)).unwrap();
        clean(&e);
        let fs = e.fs_by_name("span").unwrap().unwrap();
        for (base, m) in &kept {
            let got = view(&e, fs, base).unwrap();
            which(&got, &[m], &format!("round {round}, earlier {base}"));
        }
        let Some(acked) = acked else {
            // Killed before its subtree was durable.
            e.close().unwrap();
            continue;
        };
        acked_total += acked;
        // The models after the acknowledged operations and after the one
        // in flight.
        let mut r = Rng(seed_of(round));
        let (mut m, mut n) = (Model::new(), 0);
        for _ in 0..acked {
            let op = choose(&m, &mut r, &mut n);
            m = apply(&m, &op);
        }
        let op = choose(&m, &mut r, &mut n);
        let next = apply(&m, &op);
        let cut = partial(&m, &op);
        let base = format!("r{round}");
        let got = view(&e, fs, &base).unwrap();
        let mut candidates = vec![&m, &next];
        candidates.extend(cut.as_ref());
        let at = which(
            &got,
            &candidates,
            &format!("round {round} after {acked} ops"),
        );
        let how = [
            "without the one in flight",
            "with the one in flight",
            "with the file created, no data yet",
        ];
        eprintln!(
            "round {round}: {acked} operations acknowledged, recovered {}",
            how[at]
        );
        let keep = match at {
            0 => m,
            1 => next,
            _ => cut.expect("a third candidate"),
        };
        kept.push((base, keep));
        e.close().unwrap();
    }
    assert!(
        acked_total > 30,
        "the child acknowledged too little ({acked_total}) to test anything"
    );
}
