//! The namespace in the engine against an in-memory model: random
//! directory trees, files with data, renames of files and directories,
//! hard links, symlinks, unlinks, rmdirs and truncates, on four shards over
//! two reactors, across clean restarts and crashes.
//!
//! After a crash or a power cut at an exact I/O the recovered tree must
//! equal the model at some point between the last sync and the crash (the journal keeps its order), and
//! at least the state of the last sync; the namespace's own check (every
//! entry names a live inode, link counts, parents, no loops, no orphans)
//! must find nothing.

mod common;

use common::{memory_devices, present, small_config, Rng};
use flint_dataplane::bdev::fault::{FaultPlan, FaultyDevice};
use flint_dataplane::bdev::BlockDevice;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::meta::namespace::RenameFlags;
use flint_engine::store::{StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;

fn two_reactors() -> Engine {
    Engine::start(&ReactorConfig {
        cores: vec![],
        pin: false,
        ..ReactorConfig::default()
    })
    .unwrap()
}

/// What a path names, as the model and the engine's tree are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

type Tree = BTreeMap<String, Node>;

/// The model: paths to nodes, where a file's node holds its inode's id in
/// `data` (hard links share one).
#[derive(Clone, Default)]
struct Model {
    paths: BTreeMap<String, Node>,
    data: BTreeMap<u64, Arc<Vec<u8>>>,
}

impl Model {
    /// The tree as paths to contents.
    fn view(&self) -> Tree {
        self.paths
            .iter()
            .map(|(p, n)| {
                let n = match n {
                    Node::File(id) => Node::File(self.data[&id_of(id)].to_vec()),
                    n => n.clone(),
                };
                (p.clone(), n)
            })
            .collect()
    }
}

/// A model file's id, kept in its node's bytes.
fn id_of(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap())
}

/// The engine's tree, walked from the root with paged listings.
fn walk(e: &Engine, fs: u32) -> Tree {
    let mut out = Tree::new();
    let mut dirs = vec![String::new()];
    while let Some(d) = dirs.pop() {
        for st in e.list_dir(fs, &d).unwrap() {
            let path = if d.is_empty() {
                st.name.clone()
            } else {
                format!("{d}/{}", st.name)
            };
            let node = match st.mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    dirs.push(path.clone());
                    Node::Dir
                }
                libc::S_IFLNK => {
                    Node::Symlink(String::from_utf8(e.readlink_path(fs, &path).unwrap()).unwrap())
                }
                _ => Node::File(e.read(st.ino, 0, st.size as usize + 1).unwrap()),
            };
            out.insert(path, node);
        }
    }
    out
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The model's paths of one kind.
fn of(model: &Model, want: fn(&Node) -> bool) -> Vec<String> {
    model
        .paths
        .iter()
        .filter(|(_, n)| want(n))
        .map(|(p, _)| p.clone())
        .collect()
}

fn clean(e: &Engine) {
    let mut bad: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    bad.extend(e.fsck_names().unwrap());
    assert!(bad.is_empty(), "{bad:?}");
}

/// Checks that a call was refused with `errno`; another error (a power
/// cut) is passed on.
fn refused(r: Result<(), StoreError>, errno: i32) -> Result<(), StoreError> {
    match r {
        Err(e) if e.errno() == errno => Ok(()),
        Err(e) if e.errno() == -libc::EIO => Err(e),
        other => panic!("expected errno {errno}, got {other:?}"),
    }
}

/// One random operation on the engine and the model. Every state the
/// engine may be left in if the operation fails part way (a power cut) is
/// handed to `maybe` before the engine is asked: with acknowledged meaning
/// durable, recovery finds the last acknowledged state or one of those.
fn random_op(
    e: &Engine,
    fs: u32,
    rng: &mut Rng,
    model: &mut Model,
    n: &mut u64,
    maybe: &mut dyn FnMut(&Model),
) -> Result<(), StoreError> {
    let dirs: Vec<String> = std::iter::once(String::new())
        .chain(of(model, |n| *n == Node::Dir))
        .collect();
    let dir = dirs[rng.below(dirs.len() as u64) as usize].clone();
    *n += 1;
    let fresh = join(&dir, &format!("n{}", *n));
    let files = of(model, |n| matches!(n, Node::File(_)));
    let pick = |v: &Vec<String>, rng: &mut Rng| {
        (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].clone())
    };
    let mut next = model.clone();
    match rng.below(17) {
        0..=2 => {
            next.paths.insert(fresh.clone(), Node::Dir);
            maybe(&next);
            e.mkdir(fs, &fresh, 0o755)?;
        }
        3..=7 => {
            let len = rng.below(20_000) as usize;
            let data = rng.data(len);
            next.data.insert(*n, Arc::new(Vec::new()));
            next.paths
                .insert(fresh.clone(), Node::File(n.to_le_bytes().to_vec()));
            maybe(&next);
            let ino = e.create(fs, &fresh)?;
            next.data.insert(*n, Arc::new(data.clone()));
            maybe(&next);
            e.write(ino, 0, data)?;
        }
        8 | 9 => {
            if let Some(f) = pick(&files, rng) {
                let node = next.paths.remove(&f).expect("a model path");
                next.paths.insert(fresh.clone(), node);
                maybe(&next);
                e.rename(fs, &f, &fresh, RenameFlags::default())?;
            }
        }
        10 => {
            // A directory moves with everything under it, never under
            // itself.
            let subdirs = of(model, |n| *n == Node::Dir);
            if let Some(d) = pick(&subdirs, rng) {
                let inside = dir == d || dir.starts_with(&format!("{d}/"));
                if inside {
                    refused(
                        e.rename(fs, &d, &fresh, RenameFlags::default()),
                        -libc::EINVAL,
                    )?;
                } else {
                    let moved: Vec<String> = next
                        .paths
                        .keys()
                        .filter(|p| *p == &d || p.starts_with(&format!("{d}/")))
                        .cloned()
                        .collect();
                    for p in moved {
                        let node = next.paths.remove(&p).expect("a model path");
                        next.paths.insert(format!("{fresh}{}", &p[d.len()..]), node);
                    }
                    maybe(&next);
                    e.rename(fs, &d, &fresh, RenameFlags::default())?;
                }
            }
        }
        11 => {
            if let Some(f) = pick(&files, rng) {
                let node = next.paths[&f].clone();
                next.paths.insert(fresh.clone(), node);
                maybe(&next);
                let st = e.link(fs, &f, &fresh)?;
                assert!(st.nlink >= 2);
            }
        }
        12 => {
            next.paths
                .insert(fresh.clone(), Node::Symlink("../some/target".into()));
            maybe(&next);
            e.symlink(fs, "../some/target", &fresh)?;
        }
        13 | 14 => {
            let names = of(model, |n| *n != Node::Dir);
            if let Some(f) = pick(&names, rng) {
                next.paths.remove(&f);
                maybe(&next);
                e.unlink(fs, &f)?;
            }
        }
        15 => {
            let subdirs = of(model, |n| *n == Node::Dir);
            if let Some(d) = pick(&subdirs, rng) {
                let empty = !model.paths.keys().any(|p| parent(p) == d);
                if empty {
                    next.paths.remove(&d);
                    maybe(&next);
                    e.rmdir(fs, &d)?;
                } else {
                    refused(e.rmdir(fs, &d), -libc::ENOTEMPTY)?;
                }
            }
        }
        16 => {
            if let Some(f) = pick(&files, rng) {
                let ino = e.lookup(fs, &f)?.expect("a model file exists");
                let size = rng.below(25_000);
                // Every name of the inode sees the new size.
                let Node::File(id) = &next.paths[&f] else {
                    unreachable!()
                };
                let id = id_of(id);
                Arc::make_mut(next.data.get_mut(&id).unwrap()).resize(size as usize, 0);
                maybe(&next);
                e.truncate(ino, size)?;
            }
        }
        _ => {}
    }
    *model = next;
    Ok(())
}

#[test]
fn namespace_matches_a_model_across_restarts_and_crashes() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(
        devs.clone(),
        StoreConfig {
            shards: 4,
            ..small_config()
        },
        false,
    )
    .unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, false, 1 << 40).unwrap();
    let mut rng = Rng(2024);
    let mut model = Model::default();
    // Model states since the last sync: the recovered tree is one of them.
    let mut models: Vec<Model> = vec![model.clone()];
    let mut n = 0u64;
    for step in 0..1500 {
        match rng.below(20) {
            0..=16 => random_op(&e, fs, &mut rng, &mut model, &mut n, &mut |_| {}).unwrap(),
            17 => {
                e.sync().unwrap();
                models = vec![model.clone()];
                continue;
            }
            18 => {
                // A crash at an arbitrary point after the last sync.
                drop(e);
                e = two_reactors();
                e.open(present(&devs)).unwrap();
                let got = walk(&e, fs);
                let Some(at) = models.iter().position(|m| m.view() == got) else {
                    panic!("step {step}: the recovered tree is no state since the last sync");
                };
                // Go on from the state recovered: the model at that point.
                model = models.swap_remove(at);
                models = vec![model.clone()];
                clean(&e);
                continue;
            }
            _ => {
                e.close().unwrap();
                e = two_reactors();
                e.open(present(&devs)).unwrap();
                assert_eq!(
                    walk(&e, fs),
                    model.view(),
                    "step {step}: after a clean restart"
                );
                models = vec![model.clone()];
                continue;
            }
        }
        models.push(model.clone());
    }
    assert_eq!(walk(&e, fs), model.view());
    clean(&e);
    e.close().unwrap();
}

/// Power cuts at exact I/Os during namespace work (mkdir, create and write,
/// renames of files and directories, links, unlinks, rmdirs, truncates),
/// sometimes again during recovery: the recovered tree is the model after
/// the last acknowledged operation (or a state the one in flight may have
/// left), and the checks find nothing.
/// One shard, so one journal orders everything.
#[test]
fn power_cuts_during_namespace_work_keep_every_acknowledged_change() {
    let rounds: usize = std::env::var("FLINT_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let plan = Arc::new(FaultPlan::default());
    let devs: Vec<Arc<dyn BlockDevice>> = memory_devices(5, 48)
        .into_iter()
        .map(|d| FaultyDevice::wrap_shared(d, plan.clone()) as Arc<dyn BlockDevice>)
        .collect();
    let mut e = two_reactors();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, false, 1 << 40).unwrap();
    let mut rng = Rng(77);
    let mut model = Model::default();
    let mut n = 0u64;
    for round in 0..rounds {
        // Acknowledged means durable: recovery finds the last acknowledged
        // state, or one the operation cut short may have left.
        let mut candidates;
        plan.fail_after(rng.below(3000) as i64);
        loop {
            let mut inflight = vec![model.clone()];
            let r = if rng.below(15) == 0 {
                e.sync()
            } else {
                random_op(&e, fs, &mut rng, &mut model, &mut n, &mut |m| {
                    inflight.push(m.clone())
                })
            };
            if r.is_err() {
                candidates = inflight;
                break;
            }
        }
        drop(e);
        if rng.below(3) == 0 {
            plan.fail_after(rng.below(60) as i64);
            let mut again = two_reactors();
            let _ = again.open(present(&devs));
            drop(again);
        }
        plan.clear();
        e = two_reactors();
        e.open(present(&devs)).unwrap();
        clean(&e);
        let got = walk(&e, fs);
        let Some(at) = candidates.iter().position(|m| m.view() == got) else {
            panic!(
                "round {round}: the recovered tree ({} paths) is neither the last acknowledged \
                 state nor one the operation in flight may have left ({} candidates)",
                got.len(),
                candidates.len()
            );
        };
        model = candidates.swap_remove(at);
    }
    e.close().unwrap();
}
