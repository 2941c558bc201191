//! Snapshots: taken on every shard at once, read through tagged inodes,
//! never changed, kept across restarts and crashes, with exact
//! reclaimable bytes, and everything they held freed when deleted.

mod common;

use common::{memory_devices, present, small_config, two_reactors, Rng};
use flint_engine::engine::Engine;
use flint_engine::store::{StoreConfig, StoreError};

const B: u64 = 4096;

fn config(shards: u32) -> StoreConfig {
    StoreConfig {
        shards,
        ..small_config()
    }
}

fn clean(e: &Engine) {
    let mut problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    problems.extend(e.fsck_names().unwrap());
    assert!(problems.is_empty(), "fsck: {problems:?}");
}

/// The file `name` in the snapshot's root (its root inode `root`).
fn snap_file(e: &Engine, root: u64, path: &[&str]) -> u64 {
    let mut ino = root;
    for p in path {
        ino = e.lookup_at(ino, p.as_bytes()).unwrap().ino;
    }
    ino
}

fn reclaimable(e: &Engine, fs: u32, name: &str) -> u64 {
    e.snapshot_list(Some(fs))
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .reclaimable
}

fn run(shards: u32, reduction: bool) {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(shards), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, reduction, 1 << 40).unwrap();
    e.mkdir(fs, "dir", 0o755).unwrap();
    let mut rng = Rng(7 + u64::from(shards));
    let big = e.create(fs, "dir/big").unwrap();
    let big_v1 = rng.data(3 << 20);
    e.write(big, 0, big_v1.clone()).unwrap();
    let small = e.create(fs, "small").unwrap();
    let small_v1 = rng.data(10_000);
    e.write(small, 0, small_v1.clone()).unwrap();
    let cut = e.create(fs, "cut").unwrap();
    let cut_v1 = rng.data(64 << 10);
    e.write(cut, 0, cut_v1.clone()).unwrap();

    let s1 = e.snapshot_create(fs, "s1").unwrap();
    assert_eq!(s1.reclaimable, 0);
    assert_eq!(s1.bytes, (3 << 20) + 10_000 + (64 << 10));
    assert!(matches!(
        e.snapshot_create(fs, "s1"),
        Err(StoreError::Exists { .. })
    ));

    // Diverge: overwrite 1 MiB of the big file, unlink a file, cut one.
    let y = rng.data(1 << 20);
    e.write(big, 512 << 10, y.clone()).unwrap();
    e.unlink(fs, "small").unwrap();
    e.truncate(cut, 16 << 10).unwrap();
    let fresh = e.create(fs, "dir/new").unwrap();
    e.write(fresh, 0, vec![9; 5000]).unwrap();
    e.sync().unwrap();
    let mut big_v2 = big_v1.clone();
    big_v2[512 << 10..(512 << 10) + (1 << 20)].copy_from_slice(&y);
    let dropped = (1 << 20) / B + 10_000u64.div_ceil(B) + (48 << 10) / B;
    assert_eq!(reclaimable(&e, fs, "s1"), dropped * B);

    let check_s1 = |e: &Engine, live: &[u8]| {
        let root = e.snapshot_list(Some(fs)).unwrap()[0].root;
        let b = snap_file(e, root, &["dir", "big"]);
        assert!(
            e.read(b, 0, 4 << 20).unwrap() == big_v1,
            "the snapshot's big file"
        );
        assert_eq!(e.stat(b).unwrap().size, 3 << 20);
        let s = snap_file(e, root, &["small"]);
        assert!(
            e.read(s, 0, 1 << 20).unwrap() == small_v1,
            "the snapshot's small file"
        );
        let c = snap_file(e, root, &["cut"]);
        assert!(
            e.read(c, 0, 1 << 20).unwrap() == cut_v1,
            "the snapshot's cut file"
        );
        let dir = snap_file(e, root, &["dir"]);
        let names: Vec<Vec<u8>> = e
            .readdir(dir, 0, 100)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(
            names,
            vec![b"big".to_vec()],
            "files made since are not in it"
        );
        // Read-only.
        for r in [
            e.write(b, 0, vec![1; 10]),
            e.truncate(b, 0),
            e.unlink_at(dir, b"big", flint_engine::engine::root_ctx()),
        ] {
            assert_eq!(r.unwrap_err().errno(), -libc::EROFS);
        }
        // The live files are the new ones.
        assert!(
            e.read(big, 0, 4 << 20).unwrap() == live,
            "the live big file"
        );
        assert_eq!(e.lookup(fs, "small").unwrap(), None);
    };
    check_s1(&e, &big_v2);
    clean(&e);

    // A restart and a crash keep it, with its figures.
    e.close().unwrap();
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check_s1(&e, &big_v2);
    assert_eq!(reclaimable(&e, fs, "s1"), dropped * B);
    e.write(big, 0, vec![3; 8192]).unwrap();
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    big_v2[..8192].fill(3);
    check_s1(&e, &big_v2);
    assert_eq!(reclaimable(&e, fs, "s1"), (dropped + 2) * B);
    clean(&e);

    // Two snapshots with nothing between share everything: the older one
    // frees nothing alone until the newer goes.
    // Blocks written since s1 are s2's alone; blocks both hold are
    // neither's alone until one of them goes.
    let s2 = e.snapshot_create(fs, "s2").unwrap();
    e.write(big, 512 << 10, vec![5; 4 * B as usize]).unwrap();
    e.write(big, 2 << 20, vec![6; 2 * B as usize]).unwrap();
    e.sync().unwrap();
    big_v2[512 << 10..(512 << 10) + 4 * B as usize].fill(5);
    big_v2[2 << 20..(2 << 20) + 2 * B as usize].fill(6);
    assert_eq!(reclaimable(&e, fs, "s2"), 4 * B);
    assert_eq!(reclaimable(&e, fs, "s1"), (dropped + 2) * B);
    let s3 = e.snapshot_create(fs, "s3").unwrap();
    assert_eq!(reclaimable(&e, fs, "s3"), 0);
    e.snapshot_delete(fs, "s2").unwrap();
    assert_eq!(reclaimable(&e, fs, "s1"), (dropped + 2 + 2) * B);
    assert_eq!(reclaimable(&e, fs, "s3"), 0);
    assert!(s3.id != s2.id);
    clean(&e);

    // Restore: the file system goes back to s1, its state before kept.
    e.snapshot_restore(fs, "s1", Some("before")).unwrap();
    let restored = |e: &Engine| {
        assert!(
            e.read(big, 0, 4 << 20).unwrap() == big_v1,
            "restored big file"
        );
        assert_eq!(e.lookup(fs, "small").unwrap(), Some(small));
        assert!(
            e.read(cut, 0, 1 << 20).unwrap() == cut_v1,
            "restored cut file"
        );
        assert_eq!(e.lookup(fs, "dir/new").unwrap(), None);
        let root = e
            .snapshot_list(Some(fs))
            .unwrap()
            .into_iter()
            .find(|s| s.name == "before")
            .unwrap()
            .root;
        let b = snap_file(e, root, &["dir", "big"]);
        assert!(e.read(b, 0, 4 << 20).unwrap() == big_v2, "the state before");
        assert!(snap_file(e, root, &["dir", "new"]) != 0);
    };
    restored(&e);
    assert!(e.read(small, 0, 1 << 20).unwrap() == small_v1);
    // The live files hold s1's blocks again: deleting it would free nothing.
    assert_eq!(reclaimable(&e, fs, "s1"), 0);
    // "before" and s3 hold the same state: neither frees anything alone,
    // until s3 goes.
    assert_eq!(reclaimable(&e, fs, "before"), 0);
    e.snapshot_delete(fs, "s3").unwrap();
    assert!(reclaimable(&e, fs, "before") >= 256 * B);
    clean(&e);
    // It diverges again, and a crash keeps it.
    e.write(small, 0, vec![7; 100]).unwrap();
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    restored(&e);
    assert_eq!(e.read(small, 0, 100).unwrap(), vec![7; 100]);
    clean(&e);

    // Deleting every snapshot frees what they held.
    let before = e.space().unwrap();
    e.snapshot_delete(fs, "s1").unwrap();
    e.snapshot_delete(fs, "before").unwrap();
    assert!(e.snapshot_list(Some(fs)).unwrap().is_empty());
    e.broadcast(|s| {
        s.sync()?;
        s.checkpoint()
    })
    .unwrap();
    let after = e.space().unwrap();
    assert!(before.snapshot_refs > 256, "{before:?}");
    assert_eq!(after.snapshot_refs, 0);
    assert!(
        after.stored_bytes < before.stored_bytes,
        "stored bytes {} -> {}",
        before.stored_bytes,
        after.stored_bytes
    );
    clean(&e);
    e.close().unwrap();
}

#[test]
fn snapshots_on_one_shard() {
    run(1, false);
}

#[test]
fn snapshots_across_four_shards() {
    run(4, false);
}

#[test]
fn snapshots_of_a_file_system_that_reduces_data() {
    run(4, true);
}

/// What one snapshot holds: the files' contents when it was taken.
type Image = Vec<Vec<u8>>;

fn snapshot_image(e: &Engine, fs: u32, name: &str, files: usize) -> Option<Image> {
    let root = e
        .snapshot_list(Some(fs))
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)?
        .root;
    Some(
        (0..files)
            .map(|f| {
                let ino = snap_file(e, root, &[&format!("f{f}")]);
                e.read(ino, 0, 1 << 30)
                    .unwrap_or_else(|er| panic!("snapshot {name} file f{f}: {er}"))
            })
            .collect(),
    )
}

/// Power cuts at exact I/Os while snapshots are taken, deleted and
/// restored among writes: afterwards every snapshot whose creation was
/// acknowledged holds exactly what the files held then, one in flight is
/// there whole or not at all, a restore in flight is done or not begun,
/// and the metadata checks clean.
#[test]
fn power_cuts_during_snapshot_creation_deletion_and_restore() {
    use flint_dataplane::bdev::fault::{FaultPlan, FaultyDevice};
    use flint_dataplane::bdev::BlockDevice;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let rounds: usize = std::env::var("FLINT_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let plan = Arc::new(FaultPlan::default());
    let devs: Vec<Arc<dyn BlockDevice>> = memory_devices(5, 32)
        .into_iter()
        .map(|d| FaultyDevice::wrap_shared(d, plan.clone()) as Arc<dyn BlockDevice>)
        .collect();
    let mut e = two_reactors();
    e.format(devs.clone(), config(4), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, true, 1 << 40).unwrap();
    let inos: Vec<u64> = (0..3)
        .map(|i| e.create(fs, &format!("f{i}")).unwrap())
        .collect();
    let seed = std::env::var("FLINT_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(99);
    let mut rng = Rng(seed);
    let mut live: Image = vec![Vec::new(); 3];
    let mut snaps: BTreeMap<String, Image> = BTreeMap::new();
    let mut clones: BTreeMap<String, Image> = BTreeMap::new();
    let mut made = 0;
    for round in 0..rounds {
        plan.fail_after(rng.below(2500) as i64);
        // What was in flight when the power went.
        enum Flight {
            Write(usize, Vec<u8>),
            Create(String),
            Delete(String),
            Restore(Image, Image),
            Clone(String),
            DropClone(String),
        }
        let flight = loop {
            let pick = rng.below(9);
            match pick {
                8 if clones.len() < 2 => {
                    made += 1;
                    let name = format!("c{made}");
                    if e.snapshot_create_writable(fs, &name).is_err() {
                        break Flight::Clone(name);
                    }
                    clones.insert(name, live.clone());
                }
                8 => {
                    let name = clones.keys().next().unwrap().clone();
                    let c = e.fs_by_name(&format!("data@{name}")).unwrap().unwrap();
                    if e.fs_delete(c).is_err() {
                        break Flight::DropClone(name);
                    }
                    clones.remove(&name);
                }
                0 | 1 => {
                    made += 1;
                    let name = format!("s{made}");
                    if e.snapshot_create(fs, &name).is_err() {
                        break Flight::Create(name);
                    }
                    snaps.insert(name, live.clone());
                }
                2 if !snaps.is_empty() => {
                    let name = snaps.keys().nth(rng.below(snaps.len() as u64) as usize);
                    let name = name.unwrap().clone();
                    if e.snapshot_delete(fs, &name).is_err() {
                        break Flight::Delete(name);
                    }
                    snaps.remove(&name);
                }
                3 if !snaps.is_empty() => {
                    let name = snaps.keys().nth(rng.below(snaps.len() as u64) as usize);
                    let name = name.unwrap().clone();
                    let before = live.clone();
                    if e.snapshot_restore(fs, &name, None).is_err() {
                        break Flight::Restore(before, snaps[&name].clone());
                    }
                    live = snaps[&name].clone();
                }
                _ => {
                    let f = rng.below(3) as usize;
                    let off = rng.below(live[f].len() as u64 + 20_000) as usize;
                    let len = 1 + rng.below(30_000) as usize;
                    let data = rng.data(len);
                    let mut next = live[f].clone();
                    if next.len() < off + data.len() {
                        next.resize(off + data.len(), 0);
                    }
                    next[off..off + data.len()].copy_from_slice(&data);
                    if e.write(inos[f], off as u64, data).is_err() {
                        break Flight::Write(f, next);
                    }
                    live[f] = next;
                }
            }
        };
        eprintln!(
            "round {round}: {} in flight, snapshots {:?}",
            match &flight {
                Flight::Write(..) => "a write".to_string(),
                Flight::Create(n) => format!("creating {n}"),
                Flight::Delete(n) => format!("deleting {n}"),
                Flight::Restore(..) => "a restore".to_string(),
                Flight::Clone(n) => format!("cloning {n}"),
                Flight::DropClone(n) => format!("deleting clone {n}"),
            },
            snaps.keys().collect::<Vec<_>>()
        );
        drop(e);
        plan.clear();
        e = two_reactors();
        e.open(present(&devs)).unwrap();
        clean(&e);
        let now: Image = inos
            .iter()
            .map(|&i| e.read(i, 0, 1 << 30).unwrap())
            .collect();
        match &flight {
            Flight::Write(f, next) => {
                assert!(now == live || (now[*f] == *next && (0..3).all(|g| g == *f || now[g] == live[g])),
                    "round {round}: the files are neither the acknowledged state nor it plus the write in flight");
            }
            Flight::Restore(before, target) => {
                // The restore was done (the mark was durable) or not begun.
                assert!(
                    now == *before || now == *target,
                    "round {round}: a restore cut short left a state of neither side"
                );
            }
            _ => assert!(now == live, "round {round}: the live files changed"),
        }
        live = now;
        let listed: Vec<String> = e
            .snapshot_list(Some(fs))
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        for (name, image) in &snaps {
            let gone = matches!(&flight, Flight::Delete(d) if d == name);
            match snapshot_image(&e, fs, name, 3) {
                Some(got) => assert!(got == *image, "round {round}: snapshot {name} changed"),
                None => assert!(gone, "round {round}: acknowledged snapshot {name} is gone"),
            }
        }
        if let Flight::Create(name) = &flight {
            if listed.contains(name) {
                let got = snapshot_image(&e, fs, name, 3).unwrap();
                assert!(
                    got == live,
                    "round {round}: snapshot {name} in flight is not whole"
                );
                snaps.insert(name.clone(), got);
            }
        }
        if let Flight::Delete(name) = &flight {
            if !listed.contains(name) {
                snaps.remove(name);
            }
        }
        assert_eq!(listed.len(), snaps.len(), "round {round}: {listed:?}");
        // Writable snapshots: whole or absent, and untouched by the origin.
        let clone_image = |e: &Engine, name: &str| -> Option<Image> {
            let c = e.fs_by_name(&format!("data@{name}")).unwrap()?;
            Some(
                (0..3)
                    .map(|i| {
                        let ino = e.lookup(c, &format!("f{i}")).unwrap().unwrap();
                        e.read(ino, 0, 1 << 30).unwrap()
                    })
                    .collect(),
            )
        };
        if let Flight::Clone(name) = &flight {
            if let Some(got) = clone_image(&e, name) {
                assert!(
                    got == live,
                    "round {round}: clone {name} in flight is not whole"
                );
                clones.insert(name.clone(), got);
            }
        }
        if let Flight::DropClone(name) = &flight {
            if clone_image(&e, name).is_none() {
                clones.remove(name);
            }
        }
        for (name, image) in &clones {
            let got = clone_image(&e, name);
            assert!(
                got.as_ref() == Some(image),
                "round {round}: clone {name} changed or is gone"
            );
        }
        assert_eq!(e.snapshot_clones(fs).unwrap().len(), clones.len());
    }
    e.close().unwrap();
}

/// A file system holds 1,024 snapshots at once, each its own moment,
/// across a restart, and deleting them all frees what they held.
#[test]
fn a_thousand_and_twenty_four_snapshots() {
    let devs = memory_devices(5, 512);
    let mut e = two_reactors();
    e.format(devs.clone(), config(2), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("many", 3, 2, false, 1 << 40).unwrap();
    let f = e.create(fs, "f").unwrap();
    const N: u64 = 1024;
    for i in 0..N {
        // Each snapshot sees a different block 0 and a file one longer.
        e.write(f, 0, vec![(i % 251) as u8; 4096]).unwrap();
        e.write(f, 4096 * (i + 1), vec![7; 4096]).unwrap();
        e.snapshot_create(fs, &format!("s{i:04}")).unwrap();
    }
    let check = |e: &Engine| {
        let list = e.snapshot_list(Some(fs)).unwrap();
        assert_eq!(list.len() as u64, N);
        for i in [0, 1, 511, 1000, N - 1] {
            let s = &list[i as usize];
            assert_eq!(s.name, format!("s{i:04}"));
            let ino = snap_file(e, s.root, &["f"]);
            assert_eq!(e.stat(ino).unwrap().size, 4096 * (i + 2));
            assert_eq!(e.read(ino, 0, 4096).unwrap(), vec![(i % 251) as u8; 4096]);
        }
    };
    check(&e);
    e.close().unwrap();
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e);
    clean(&e);
    for i in 0..N {
        e.snapshot_delete(fs, &format!("s{i:04}")).unwrap();
    }
    e.broadcast(|s| {
        s.sync()?;
        s.checkpoint()
    })
    .unwrap();
    assert_eq!(e.space().unwrap().snapshot_refs, 0);
    clean(&e);
    e.close().unwrap();
}

/// A writable snapshot: file system `FS@NAME`, the origin's files at one
/// moment under their own inodes, diverging both ways, across a restart,
/// deleted with everything freed.
fn writable(shards: u32, reduction: bool) {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(shards), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, reduction, 1 << 40).unwrap();
    let mut rng = Rng(21 + u64::from(shards));
    e.mkdir(fs, "a", 0o755).unwrap();
    e.mkdir(fs, "a/b", 0o700).unwrap();
    let mut files = Vec::new();
    for i in 0..40 {
        let path = format!("{}/f{i}", if i % 2 == 0 { "a" } else { "a/b" });
        let ino = e.create(fs, &path).unwrap();
        let data = if i % 5 == 0 {
            vec![i as u8; 3 * 4096] // dedups when reduction is on
        } else {
            rng.data(1000 + i * 997)
        };
        e.write(ino, 0, data.clone()).unwrap();
        files.push((path, data));
    }
    e.symlink(fs, "a/f0", "link").unwrap();
    e.link(fs, "a/f2", "hard").unwrap();
    let before = e.space().unwrap();

    let c = e.snapshot_create_writable(fs, "exp").unwrap();
    let clone = e
        .fs_by_name("data@exp")
        .unwrap()
        .expect("the clone's file system");
    assert_eq!(clone, c.fs);
    assert_eq!(e.snapshot_clones(fs).unwrap().len(), 1);
    assert!(
        e.snapshot_list(Some(fs)).unwrap().is_empty(),
        "the snapshot it was copied from is gone"
    );
    let read_all = |e: &Engine, f: u32, files: &[(String, Vec<u8>)]| {
        for (path, data) in files {
            let ino = e
                .lookup(f, path)
                .unwrap()
                .unwrap_or_else(|| panic!("{path}"));
            assert_eq!(&e.read(ino, 0, data.len() + 10).unwrap(), data, "{path}");
        }
    };
    read_all(&e, clone, &files);
    assert_eq!(e.readlink_path(clone, "link").unwrap(), b"a/f0");
    assert_eq!(e.stat_path(clone, "hard").unwrap().nlink, 2);
    assert_eq!(e.stat_path(clone, "a/b").unwrap().mode & 0o7777, 0o700);
    let used = |e: &Engine, f: u32| {
        e.fs_list()
            .unwrap()
            .into_iter()
            .find(|(m, _)| m.id == f)
            .unwrap()
            .1
    };
    assert_eq!(used(&e, clone), used(&e, fs));
    let grew = e
        .space()
        .unwrap()
        .stored_bytes
        .saturating_sub(before.stored_bytes);
    assert!(
        grew < 64 << 10,
        "a clone shares its blocks, yet stored {grew} more bytes"
    );

    // Both diverge.
    let f0 = e.lookup(clone, "a/f0").unwrap().unwrap();
    e.write(f0, 0, vec![0xee; 4096]).unwrap();
    e.unlink(clone, "a/b/f1").unwrap();
    e.mkdir(clone, "new", 0o755).unwrap();
    let n = e.create(clone, "new/x").unwrap();
    e.write(n, 0, vec![1; 5000]).unwrap();
    let o2 = e.lookup(fs, "a/f2").unwrap().unwrap();
    e.write(o2, 0, vec![0xaa; 100]).unwrap();
    assert_eq!(
        e.read(e.lookup(fs, "a/f0").unwrap().unwrap(), 0, 8)
            .unwrap(),
        files[0].1[..8]
    );
    assert!(e.lookup(fs, "a/b/f1").unwrap().is_some());
    assert!(e.lookup(fs, "new").unwrap().is_none());
    let c2 = e.lookup(clone, "a/f2").unwrap().unwrap();
    assert_eq!(e.read(c2, 0, 100).unwrap(), files[2].1[..100]);
    // Deleting the origin leaves the clone whole.
    for (path, _) in &files[3..] {
        e.unlink(fs, path).unwrap();
    }
    clean(&e);
    e.close().unwrap();
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    read_all(
        &e,
        clone,
        &files[3..]
            .iter()
            .filter(|(p, _)| p != "a/b/f1")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        e.read(e.lookup(clone, "new/x").unwrap().unwrap(), 0, 5000)
            .unwrap(),
        vec![1; 5000]
    );
    clean(&e);
    e.fs_delete(clone).unwrap();
    assert!(e.snapshot_clones(fs).unwrap().is_empty());
    clean(&e);
    e.close().unwrap();
}

#[test]
fn writable_snapshots_on_one_shard() {
    writable(1, false);
}

#[test]
fn writable_snapshots_on_four_shards_with_reduction() {
    writable(4, true);
}
