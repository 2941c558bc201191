//! The sharded engine: four shards on two reactors over the same devices,
//! files spread over the shards by name, requests routed to owners, every
//! shard recovering its own slice of the journal, checkpoints and slots.

mod common;

use common::{memory_devices, present, small_config, two_reactors, Rng};
use flint_engine::engine::Engine;
use flint_engine::store::StoreConfig;
use std::collections::{BTreeMap, BTreeSet};

fn config() -> StoreConfig {
    StoreConfig {
        shards: 4,
        ..small_config()
    }
}

fn check(e: &Engine, model: &BTreeMap<u64, Vec<u8>>) {
    for (&ino, want) in model {
        let got = e.read(ino, 0, want.len() + 10).unwrap();
        assert!(got == *want, "file {ino:#x}");
    }
}

#[test]
fn files_spread_over_shards_and_survive_restarts_and_crashes() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    assert_eq!(e.shard_map().shards(), 4);
    let fs = e.fs_create("data", 3, 2, true, 1 << 40).unwrap();
    assert_eq!(e.fs_by_name("data").unwrap(), Some(fs));
    let inos: Vec<u64> = (0..12)
        .map(|i| e.create(fs, &format!("file{i}")).unwrap())
        .collect();
    // A directory's entries and new inodes live on the directory's shard.
    let shards: BTreeSet<u32> = inos
        .iter()
        .map(|&i| e.shard_map().shard_of_ino(i))
        .collect();
    let root = e.shard_map().shard_of_ino(e.root_of(fs));
    assert_eq!(
        shards,
        BTreeSet::from([root]),
        "files landed on shards {shards:?}"
    );
    assert_eq!(e.lookup(fs, "file7").unwrap(), Some(inos[7]));
    assert_eq!(e.list(fs).unwrap().len(), 12);

    let mut rng = Rng(31);
    let mut model: BTreeMap<u64, Vec<u8>> = inos.iter().map(|&i| (i, Vec::new())).collect();
    for _ in 0..300 {
        let ino = inos[rng.below(12) as usize];
        let file = model.get_mut(&ino).unwrap();
        if rng.below(10) == 0 {
            let size = rng.below(file.len() as u64 + 8192);
            e.truncate(ino, size).unwrap();
            file.resize(size as usize, 0);
        } else {
            let off = rng.below(file.len() as u64 + 8192);
            let len = 1 + rng.below(20_000) as usize;
            let data = rng.data(len);
            e.write(ino, off, data.clone()).unwrap();
            let end = off as usize + data.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[off as usize..end].copy_from_slice(&data);
        }
    }
    e.sync().unwrap();
    check(&e, &model);
    let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(problems.is_empty(), "{problems:?}");
    let space = e.space().unwrap();
    assert_eq!(
        space.logical,
        model.values().map(|f| f.len() as u64).sum::<u64>()
    );
    let used: u64 = e.fs_list().unwrap()[0].1;
    assert_eq!(used, space.logical);
    e.close().unwrap();

    // A restart recovers every shard.
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    // Acknowledged writes survive a crash, on every shard.
    for &ino in &inos {
        e.write(ino, 0, vec![0xEE; 5000]).unwrap();
        let file = model.get_mut(&ino).unwrap();
        if file.len() < 5000 {
            file.resize(5000, 0);
        }
        file[..5000].fill(0xEE);
    }
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    // In write-back mode they are acknowledged before durable: without a
    // sync (or the seal tick, off here) a crash drops them.
    e.fs_set_write_back(fs, true).unwrap();
    for &ino in &inos {
        e.write(ino, 0, vec![0x11; 3000]).unwrap();
    }
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    assert!(e.fs_list().unwrap()[0].0.write_back);
    e.fs_set_write_back(fs, false).unwrap();
    e.unlink(fs, "file0").unwrap();
    e.sync().unwrap();
    assert_eq!(e.list(fs).unwrap().len(), 11);
    e.close().unwrap();
}

#[test]
fn one_large_file_spreads_over_every_shard() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("ckpt", 3, 2, false, 1 << 40).unwrap();
    let ino = e.create(fs, "model.ckpt").unwrap();
    let mut rng = Rng(77);
    let mut model = vec![0u8; 5 << 20];
    // Writes of every size, many crossing 1 MiB range boundaries.
    let mut off = 0usize;
    while off < model.len() {
        let len = (1 + rng.below(900_000) as usize).min(model.len() - off);
        let data = rng.data(len);
        e.write(ino, off as u64, data.clone()).unwrap();
        model[off..off + len].copy_from_slice(&data);
        off += len;
    }
    for _ in 0..20 {
        let off = rng.below(model.len() as u64 - 5000);
        let data = rng.data(5000);
        e.write(ino, off, data.clone()).unwrap();
        model[off as usize..off as usize + 5000].copy_from_slice(&data);
    }
    e.sync().unwrap();
    let held: Vec<u64> = e.broadcast(move |s| s.blocks_held(ino)).unwrap();
    assert!(
        held.iter().all(|&b| b > 0),
        "every shard holds part of the file: {held:?}"
    );
    assert_eq!(held.iter().sum::<u64>(), (5 << 20) / 4096);
    assert_eq!(e.stat(ino).unwrap().size, 5 << 20);
    assert!(e.read(ino, 0, 6 << 20).unwrap() == model);
    let got = e.read(ino, 1_000_000, 2_500_000).unwrap();
    assert!(got[..] == model[1_000_000..3_500_000]);
    assert_eq!(
        e.space().unwrap().logical,
        5 << 20,
        "pieces are not counted twice"
    );

    // Truncation reaches every shard; a restart and a crash keep it.
    e.truncate(ino, 2_600_000).unwrap();
    model.truncate(2_600_000);
    e.sync().unwrap();
    assert!(e.read(ino, 0, 6 << 20).unwrap() == model);
    e.close().unwrap();
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    assert!(e.read(ino, 0, 6 << 20).unwrap() == model);
    // Acknowledged, never synced: durable all the same.
    e.write(ino, 4 << 20, vec![7; 100_000]).unwrap();
    model.resize((4 << 20) + 100_000, 0);
    model[4 << 20..].fill(7);
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    assert!(e.read(ino, 0, 6 << 20).unwrap() == model);
    let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(problems.is_empty(), "{problems:?}");
    e.unlink(fs, "model.ckpt").unwrap();
    e.sync().unwrap();
    let left: Vec<bool> = e.broadcast(move |s| s.has_file(ino)).unwrap();
    assert!(left.iter().all(|&l| !l), "no shard keeps a piece: {left:?}");
    // Every data chunk is free (metadata pages remain until a checkpoint).
    let space = e.space().unwrap();
    assert_eq!(space.physical - space.metadata, 0, "{space:?}");
    e.close().unwrap();
}

#[test]
fn pieces_past_the_size_never_resurface_after_a_crash() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, false, 1 << 40).unwrap();
    let ino = e.create(fs, "f").unwrap();
    e.write(ino, 0, vec![1; 100]).unwrap();
    e.sync().unwrap();
    // A piece far out is made durable on its shard alone (as its seal timer
    // would), but the home never records the larger size: a crash.
    let far = 3 << 20;
    let shard = e.shard_map().shard_of_range(ino, 3);
    assert_ne!(shard, e.shard_map().shard_of_ino(ino));
    e.call_shard(shard, move |s| {
        s.write_part(ino, fs, far, &[9; 4096])?;
        s.sync()
    })
    .unwrap();
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    assert_eq!(e.stat(ino).unwrap().size, 100);
    // Growing the file later must show a hole there, not the stale piece.
    e.write(ino, (4 << 20) - 10, vec![2; 10]).unwrap();
    let got = e.read(ino, far, 4096).unwrap();
    assert!(got.iter().all(|&b| b == 0), "stale piece resurfaced");
    e.close().unwrap();
}

#[test]
fn shards_move_between_reactors_with_a_new_epoch() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, true, 1 << 40).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..8 {
        let ino = e.create(fs, &format!("f{i}")).unwrap();
        let data = vec![i as u8 + 1; 300_000 + i * 1000];
        e.write(ino, 0, data.clone()).unwrap();
        model.insert(ino, data);
    }
    let epoch = e.shard_map().epoch();
    // Move every shard onto reactor 0, then one back.
    for shard in 0..4 {
        e.move_shard(shard, 0).unwrap();
    }
    assert!((0..4).all(|s| e.shard_map().owner(s) == 0));
    assert!(e.shard_map().epoch() > epoch);
    check(&e, &model);
    e.move_shard(2, 1).unwrap();
    assert_eq!(e.shard_map().owner(2), 1);
    for (&ino, data) in model.iter_mut() {
        data.extend_from_slice(&[0x5A; 10_000]);
        let at = data.len() as u64 - 10_000;
        e.write(ino, at, vec![0x5A; 10_000]).unwrap();
    }
    check(&e, &model);
    assert!(e.move_shard(9, 0).is_err(), "no such shard");
    assert!(e.move_shard(0, 7).is_err(), "no such reactor");
    e.close().unwrap();
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
}

#[test]
fn dedup_spans_every_shard_and_reclaims_across_restarts() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("dd", 3, 2, true, 1 << 40).unwrap();
    let mut rng = Rng(77);
    let blocks: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            let mut b = rng.data(4096);
            b[..4].copy_from_slice(&i.to_le_bytes());
            b
        })
        .collect();
    // Eight files homed on several shards, each holding the same 64
    // distinct blocks in a different order at a different offset (so the
    // copies sit in different ranges, on different shards' block maps).
    let mut model = BTreeMap::new();
    for f in 0..8usize {
        let ino = e.create(fs, &format!("copy{f}")).unwrap();
        let mut data = Vec::new();
        for i in 0..64 {
            data.extend_from_slice(&blocks[(i + f * 7) % 64]);
        }
        let at = (f as u64) * (300 << 10);
        e.write(ino, at, data.clone()).unwrap();
        let mut file = vec![0u8; at as usize];
        file.extend_from_slice(&data);
        model.insert(ino, file);
    }
    // The files share their directory's shard; their ranges' block maps
    // lie on several.
    let inos: Vec<u64> = model.keys().copied().collect();
    let mapped: Vec<u64> = e
        .broadcast(move |s| inos.iter().map(|&i| s.blocks_held(i)).sum())
        .unwrap();
    assert!(
        mapped.iter().filter(|&&n| n > 0).count() >= 2,
        "block maps on shards {mapped:?}"
    );
    e.sync().unwrap();
    check(&e, &model);
    let space = e.space().unwrap();
    // 64 distinct blocks (holes are not blocks).
    assert_eq!(space.stored_blocks, 64, "{space:?}");
    assert_eq!(space.block_refs, 8 * 64);
    assert!((space.dedup_ratio - 8.0).abs() < 1e-9);
    // Every shard keeps part of the one copy.
    let pools: Vec<usize> = e.broadcast(|s| Ok(s.shared_blocks())).unwrap();
    assert!(pools.iter().all(|&n| n > 0), "pools {pools:?}");
    assert_eq!(pools.iter().sum::<usize>(), 64);
    let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(problems.is_empty(), "{problems:?}");
    e.close().unwrap();

    // A restart recounts references from every shard's maps.
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    assert_eq!(e.space().unwrap().stored_blocks, 64);
    // Removing all copies but one keeps every block; removing the last
    // frees them all.
    // Inode numbers grow in creation order: inos[f] is copy{f}.
    let inos: Vec<u64> = model.keys().copied().collect();
    for (f, &ino) in inos.iter().enumerate().skip(1) {
        e.unlink(fs, &format!("copy{f}")).unwrap();
        model.remove(&ino);
    }
    e.sync().unwrap();
    check(&e, &model);
    assert_eq!(e.space().unwrap().stored_blocks, 64);
    e.unlink(fs, "copy0").unwrap();
    e.sync().unwrap();
    let space = e.space().unwrap();
    assert_eq!((space.stored_blocks, space.block_refs), (0, 0), "{space:?}");
    e.sync().unwrap();
    // Every data chunk is free (metadata pages remain until a checkpoint).
    let space = e.space().unwrap();
    assert_eq!(space.physical - space.metadata, 0, "{space:?}");

    // A crash after the owners heard of dropped references but before they
    // journaled the removals, and one before they heard at all: the next
    // open recounts and reclaims both.
    let a = e.create(fs, "a").unwrap();
    e.write(a, 0, blocks.concat()).unwrap();
    e.sync().unwrap();
    assert_eq!(e.space().unwrap().stored_blocks, 64);
    e.unlink(fs, "a").unwrap();
    e.sync().unwrap();
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    assert_eq!(e.space().unwrap().stored_blocks, 0);
    let b = e.create(fs, "b").unwrap();
    e.write(b, 0, blocks.concat()).unwrap();
    e.sync().unwrap();
    e.call_shard(e.shard_map().shard_of_ino(b), move |s| {
        s.unlink(fs, "b")?;
        s.sync()
    })
    .unwrap();
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    assert_eq!(e.space().unwrap().stored_blocks, 0);
    let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(problems.is_empty(), "{problems:?}");
    e.close().unwrap();
}

#[test]
fn seal_ticks_make_write_back_shared_writes_durable_without_a_sync() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("t", 3, 2, true, 1 << 40).unwrap();
    // Acknowledged before durable: the ticks are what commit.
    e.fs_set_write_back(fs, true).unwrap();
    e.sync().unwrap();
    e.close().unwrap();
    let mut e = two_reactors();
    e.open_with(present(&devs), Some(std::time::Duration::from_millis(10)))
        .unwrap();
    let mut rng = Rng(5);
    let mut model = BTreeMap::new();
    for i in 0..6 {
        let ino = e.create(fs, &format!("t{i}")).unwrap();
        let data = rng.data(900_000 + i * 70_000);
        e.write(ino, 0, data.clone()).unwrap();
        model.insert(ino, data);
    }
    // Overwrites drop references, which the timers deliver to the owners.
    let first = *model.keys().next().unwrap();
    e.write(first, 0, vec![3; 200_000]).unwrap();
    model.get_mut(&first).unwrap()[..200_000].fill(3);
    // The timers seal, journal in rounds across shards, and deliver drops.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e
        .broadcast(|s| Ok(s.awaits_commit()))
        .unwrap()
        .contains(&true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "timers never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(problems.is_empty(), "{problems:?}");
    e.close().unwrap();
}

#[test]
fn asynchronous_reads_match_synchronous_ones() {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    e.format(devs.clone(), config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("a", 3, 2, true, 1 << 40).unwrap();
    let ino = e.create(fs, "f").unwrap();
    let mut rng = Rng(8);
    let data = rng.data(3 << 20);
    e.write(ino, 0, data.clone()).unwrap();
    e.write(ino, 5 << 20, vec![4; 10_000]).unwrap();
    let size = (5 << 20) + 10_000u64;
    for _ in 0..200 {
        let off = rng.below(size + 8192);
        let range_end = (off / (1 << 20) + 1) << 20;
        let len = (1 + rng.below(70_000)).min(range_end - off) as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        e.read_async(ino, off, len, move |r| tx.send(r).unwrap());
        let got = rx.recv().unwrap().unwrap();
        assert_eq!(
            got,
            e.read(ino, off, len).unwrap(),
            "offset {off} len {len}"
        );
    }
    // Across a range boundary it refuses (the synchronous read serves it).
    let (tx, rx) = std::sync::mpsc::channel();
    e.read_async(ino, (1 << 20) - 10, 20, move |r| tx.send(r).unwrap());
    assert!(rx.recv().unwrap().is_err());
    e.close().unwrap();
}
