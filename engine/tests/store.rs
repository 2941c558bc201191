//! The store end to end on real devices: round trips against a model of
//! the files for every protection and reduction setting, recovery, device
//! loss and scrub, bit rot and self-heal, full devices and file systems.

mod common;

use common::{engine, file_devices, fresh, memory_devices, present, small_config, Rng};
use flint_dataplane::bdev::fault::FaultyDevice;
use flint_dataplane::bdev::BlockDevice;
use flint_engine::store::{StoreConfig, StoreError, BLOCK};
use std::collections::BTreeMap;
use std::sync::Arc;

type Model = BTreeMap<u64, Vec<u8>>;

/// Random writes, truncates and syncs on a few files, mirrored in a model.
fn workload(
    e: &flint_engine::engine::Engine,
    fs: u32,
    rng: &mut Rng,
    model: &mut Model,
    ops: usize,
) {
    for _ in 0..ops {
        let name = format!("f{}", rng.below(4));
        let ino = {
            let n = name.clone();
            e.call(move |s| {
                Ok(match s.lookup(fs, &n)? {
                    Some(i) => i,
                    None => s.create(fs, &n)?,
                })
            })
            .unwrap()
        };
        let file = model.entry(ino).or_default();
        match rng.below(10) {
            0 => {
                let size = rng.below(file.len() as u64 + 20_000);
                e.call(move |s| s.truncate(ino, size)).unwrap();
                file.resize(size as usize, 0);
            }
            1 => e.call(|s| s.sync()).unwrap(),
            _ => {
                let off = rng.below(file.len() as u64 + 8192);
                let len = 1 + rng.below(3 * BLOCK as u64) as usize;
                let data = rng.data(len);
                let d = data.clone();
                e.call(move |s| s.write(ino, off, &d)).unwrap();
                let end = off as usize + len;
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[off as usize..end].copy_from_slice(&data);
            }
        }
    }
}

fn check(e: &flint_engine::engine::Engine, model: &Model) {
    for (&ino, want) in model {
        let len = want.len();
        let got = e.call(move |s| s.read(ino, 0, len + 100)).unwrap();
        assert_eq!(got.len(), want.len(), "size of file {ino}");
        assert!(got == *want, "contents of file {ino}");
    }
}

#[test]
fn round_trips_for_every_protection_and_reduction_setting() {
    for (k, m) in [(3u8, 1u8), (4, 2), (7, 2), (8, 2), (7, 4)] {
        for reduction in [true, false] {
            let devs = memory_devices(usize::from(k + m), 24);
            let mut e = engine();
            e.format(devs.clone(), small_config(), false).unwrap();
            e.open(present(&devs)).unwrap();
            let fs = e
                .call(move |s| s.fs_create("data", k, m, reduction, 1 << 30))
                .unwrap();
            let mut rng = Rng(u64::from(k) * 1000 + u64::from(m) * 10 + u64::from(reduction));
            let mut model = Model::new();
            workload(&e, fs, &mut rng, &mut model, 150);
            check(&e, &model);
            e.close().unwrap();
            // Everything was synced by close; a fresh engine recovers it.
            let mut e = engine();
            e.open(present(&devs)).unwrap();
            check(&e, &model);
            workload(&e, fs, &mut rng, &mut model, 60);
            e.call(|s| s.sync()).unwrap();
            check(&e, &model);
            if reduction {
                let sp = e.call(|s| s.space()).unwrap();
                assert!(sp.compression_ratio > 1.0, "{k}+{m}: {sp:?}");
            }
            e.close().unwrap();
        }
    }
}

#[test]
fn unsynced_writes_may_vanish_but_synced_ones_survive_a_crash() {
    let devs = memory_devices(6, 24);
    let (e, fs) = fresh(&devs, 4, 2, true);
    let mut rng = Rng(5);
    let mut model = Model::new();
    workload(&e, fs, &mut rng, &mut model, 100);
    e.call(|s| s.sync()).unwrap();
    let synced = model.clone();
    // More writes, never synced; then the process "dies" (no close).
    let ino = *synced.keys().next().unwrap();
    e.call(move |s| s.write(ino, 0, &vec![0xEE; 50_000]))
        .unwrap();
    drop(e);
    let mut e = engine();
    e.open(present(&devs)).unwrap();
    for (&ino, want) in &synced {
        let len = want.len();
        let got = e.call(move |s| s.read(ino, 0, len)).unwrap();
        if ino != *synced.keys().next().unwrap() {
            assert!(got == *want, "file {ino} changed by a crash");
        }
    }
    e.close().unwrap();
}

#[test]
fn format_refuses_a_formatted_device_without_force() {
    let devs = memory_devices(3, 16);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    let err = e.format(devs.clone(), small_config(), false).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyFormatted { .. }), "{err}");
    e.format(devs.clone(), small_config(), true).unwrap();
    e.open(present(&devs)).unwrap();
    let err = e
        .call(|s| s.fs_create("x", 3, 1, true, 1 << 20))
        .unwrap_err();
    assert!(err.to_string().contains("k + m <= 3"), "{err}");
}

fn faulty(
    n: usize,
) -> (
    Vec<Arc<dyn BlockDevice>>,
    Vec<Arc<flint_dataplane::bdev::fault::FaultPlan>>,
) {
    memory_devices(n, 24)
        .into_iter()
        .map(|d| {
            let (f, plan) = FaultyDevice::wrap(d);
            (f as Arc<dyn BlockDevice>, plan)
        })
        .unzip()
}

#[test]
fn losing_up_to_m_devices_loses_nothing_and_scrub_restores_redundancy() {
    // 4+2 on seven devices: one spare for scrub to rebuild onto.
    let (devs, plans) = faulty(7);
    let (e, fs) = fresh(&devs, 4, 2, false);
    let mut rng = Rng(77);
    let mut model = Model::new();
    workload(&e, fs, &mut rng, &mut model, 120);
    e.call(|s| s.sync()).unwrap();

    plans[1].fail_all();
    check(&e, &model);
    // Writes continue while degraded.
    workload(&e, fs, &mut rng, &mut model, 40);
    e.call(|s| s.sync()).unwrap();
    check(&e, &model);
    let rep = e.call(|s| s.scrub()).unwrap();
    assert!(rep.relocated_chunks > 0, "{rep:?}");
    assert_eq!(rep.unrecoverable, 0, "{rep:?}");
    // Redundancy is back: two more devices may go.
    plans[3].fail_all();
    plans[5].fail_all();
    check(&e, &model);
    assert!(e.call(|s| Ok(s.repairs())).unwrap().degraded_reads > 0);
    // A third concurrent loss on top is more than parity can cover: a clear
    // error, not wrong data.
    plans[0].fail_all();
    plans[2].fail_all();
    let ino = *model.keys().next().unwrap();
    let len = model[&ino].len();
    match e.call(move |s| s.read(ino, 0, len)) {
        Err(StoreError::Unrecoverable { .. }) => {}
        Ok(got) => assert!(got == model[&ino], "never wrong data"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn a_restart_with_a_device_missing_reads_everything() {
    let devs = memory_devices(6, 24);
    let (e, fs) = fresh(&devs, 4, 2, true);
    let mut rng = Rng(9);
    let mut model = Model::new();
    workload(&e, fs, &mut rng, &mut model, 100);
    e.close().unwrap();
    let mut some = present(&devs);
    some[2] = None;
    some[4] = None;
    let mut e = engine();
    e.open(some).unwrap();
    check(&e, &model);
}

#[test]
fn a_blank_replacement_device_runs_degraded_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let devs = file_devices(dir.path(), 5, 24);
    let (e, fs) = fresh(&devs, 3, 2, true);
    let mut rng = Rng(17);
    let mut model = Model::new();
    workload(&e, fs, &mut rng, &mut model, 60);
    e.close().unwrap();
    drop(devs);
    // Device 1 is replaced by a blank one.
    let p = dir.path().join("dev1.img");
    std::fs::remove_file(&p).unwrap();
    let devs = file_devices(dir.path(), 5, 24);
    let mut e = engine();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    let healthy: Vec<bool> = e
        .call(|s| Ok(s.devices()))
        .unwrap()
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    assert_eq!(healthy.iter().filter(|h| !**h).count(), 1, "{healthy:?}");
    e.close().unwrap();
}

#[test]
fn a_replacement_device_is_rebuilt_into_the_missing_slot() {
    for shards in [1u32, 2] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            shards,
            ..small_config()
        };
        let devs = file_devices(dir.path(), 5, 24);
        let mut e = engine();
        e.format(devs.clone(), cfg, false).unwrap();
        e.open(present(&devs)).unwrap();
        let fs = e
            .call(move |s| s.fs_create("data", 3, 2, true, 1 << 30))
            .unwrap();
        let mut rng = Rng(29 + u64::from(shards));
        let mut model = Model::new();
        workload(&e, fs, &mut rng, &mut model, 80);
        e.close().unwrap();
        drop(devs);
        // Device 1 dies; a blank one takes its place in the config.
        std::fs::remove_file(dir.path().join("dev1.img")).unwrap();
        let devs = file_devices(dir.path(), 5, 24);
        let mut e = engine();
        e.open(present(&devs)).unwrap();
        // Nothing to replace with a member, or with a device not opened.
        let err = e.replace_device("file0", false).unwrap_err().to_string();
        assert!(err.contains("already member 0"), "{err}");
        assert!(e.replace_device("nosuch", false).is_err());
        let done = e.replace_device("file1", false).unwrap();
        assert_eq!(done.index, 1);
        assert!(done.chunks > 0, "{done:?}");
        let err = e.replace_device("file1", false).unwrap_err().to_string();
        assert!(err.contains("already member 1"), "{err}");
        assert!(e.devices().unwrap().iter().all(|d| d.healthy));
        check(&e, &model);
        // Writes after the replacement use it too.
        workload(&e, fs, &mut rng, &mut model, 30);
        e.close().unwrap();
        drop(devs);

        // After a restart it is a member; with two other devices gone
        // (3+2 tolerates two), every read needs its rebuilt chunks.
        let devs = file_devices(dir.path(), 5, 24);
        let mut e = engine();
        e.open(present(&devs)).unwrap();
        assert!(e.devices().unwrap().iter().all(|d| d.healthy));
        e.close().unwrap();
        let mut some = present(&devs);
        some[0] = None;
        some[3] = None;
        let mut e = engine();
        e.open(some).unwrap();
        check(&e, &model);
        let err = e.replace_device("file0", false).unwrap_err().to_string();
        assert!(
            err.contains("among those the engine was opened with"),
            "{err}"
        );
        e.close().unwrap();
    }
}

#[test]
fn a_replacement_that_fails_leaves_the_engine_degraded_and_can_be_retried() {
    let devs = memory_devices(5, 24);
    let (e, fs) = fresh(&devs, 3, 2, false);
    let mut rng = Rng(41);
    let mut model = Model::new();
    workload(&e, fs, &mut rng, &mut model, 60);
    e.close().unwrap();
    // Device 2 is gone; its replacement fails every write at first.
    let mut spec =
        flint_dataplane::bdev::DeviceSpec::new("spare", flint_dataplane::bdev::Backend::Memory);
    spec.size = Some(flint_dataplane::config::ByteSize(24 << 20));
    let (spare, plan) = FaultyDevice::wrap(flint_dataplane::bdev::open(&spec).unwrap());
    let mut some = present(&devs);
    some[2] = Some(spare.clone() as Arc<dyn BlockDevice>);
    // A few commands go through (the superblock probe, the metadata
    // zeroing, some chunks), then every one fails.
    plan.fail_after(12);
    let mut e = engine();
    e.open(some.clone()).unwrap();
    let err = e.replace_device("spare", false).unwrap_err().to_string();
    assert!(err.contains("spare"), "{err}");
    check(&e, &model);
    assert_eq!(
        e.devices().unwrap().iter().filter(|d| !d.present).count(),
        1
    );
    // The same device, working now: the replacement completes.
    plan.clear();
    e.replace_device("spare", false).unwrap();
    assert!(e.devices().unwrap().iter().all(|d| d.healthy));
    check(&e, &model);
    e.close().unwrap();
    let mut e = engine();
    e.open(some).unwrap();
    assert!(e.devices().unwrap().iter().all(|d| d.healthy));
    check(&e, &model);
    e.close().unwrap();
}

#[test]
fn bit_rot_is_detected_repaired_and_healed() {
    let dir = tempfile::tempdir().unwrap();
    let devs = file_devices(dir.path(), 5, 24);
    let (e, fs) = fresh(&devs, 3, 2, false);
    let ino = e.call(move |s| s.create(fs, "victim")).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let d = data.clone();
    e.call(move |s| s.write(ino, 0, &d)).unwrap();
    e.call(|s| s.sync()).unwrap();
    // Rot bytes of several blocks on the backing files.
    let mut rotted = Vec::new();
    for idx in [0u64, 7, 20, 41] {
        let (addr, chunks, layout) = e
            .call(move |s| Ok(s.block_location(ino, idx)))
            .unwrap()
            .unwrap();
        let (dev, slot) = chunks[usize::from(addr.chunk)];
        let off = layout.slot_lba(slot) * 4096 + u64::from(addr.offset) + 100;
        rotted.push((dev, off));
    }
    e.close().unwrap();
    use std::os::unix::fs::FileExt;
    for &(dev, off) in &rotted {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join(format!("dev{dev}.img")))
            .unwrap();
        f.write_all_at(b"ROT!ROT!", off).unwrap();
    }
    let mut e = engine();
    e.open(present(&devs)).unwrap();
    let got = e.call(move |s| s.read(ino, 0, 200_000)).unwrap();
    assert!(got == data, "rotted blocks are rebuilt from parity");
    let rep = e.call(|s| Ok(s.repairs())).unwrap();
    assert!(rep.healed_sectors >= 4, "{rep:?}");
    e.close().unwrap();
    for &(dev, off) in &rotted {
        let f = std::fs::File::open(dir.path().join(format!("dev{dev}.img"))).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, off).unwrap();
        assert_ne!(&b, b"ROT!ROT!", "the bad sector was rewritten");
    }
}

#[test]
fn full_devices_and_full_file_systems_are_clean_errors() {
    let devs = memory_devices(3, 8);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e
        .call(|s| s.fs_create("data", 2, 1, false, 1 << 40))
        .unwrap();
    let mut written = Vec::new();
    let mut rng = Rng(3);
    let err = loop {
        let name = format!("f{}", written.len());
        let data = rng.data(256 << 10);
        let d = data.clone();
        let r = e.call(move |s| {
            let ino = s.create(fs, &name)?;
            s.write(ino, 0, &d)?;
            s.sync()?;
            Ok(ino)
        });
        match r {
            Ok(ino) => written.push((ino, data)),
            Err(e) => break e,
        }
        assert!(written.len() < 1000, "a 24 MiB engine never filled");
    };
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    // Nothing written before is damaged.
    for (ino, data) in &written {
        let (ino, len) = (*ino, data.len());
        assert!(e.call(move |s| s.read(ino, 0, len)).unwrap() == *data);
    }
    // Freeing space lets writes resume.
    for i in 0..written.len() / 2 {
        let name = format!("f{i}");
        e.call(move |s| s.unlink(fs, &name)).unwrap();
    }
    written.drain(..written.len() / 2);
    e.call(|s| s.sync()).unwrap();
    let data = rng.data(256 << 10);
    e.call(move |s| {
        let ino = s.create(fs, "after")?;
        s.write(ino, 0, &data)?;
        s.sync()
    })
    .unwrap();

    // A file system capacity limit.
    let small = e
        .call(|s| s.fs_create("small", 2, 1, false, 100_000))
        .unwrap();
    let ino = e.call(move |s| s.create(small, "x")).unwrap();
    let err = e
        .call(move |s| s.write(ino, 0, &[1u8; 150_000]))
        .unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
    e.call(move |s| s.fs_resize(small, 200_000)).unwrap();
    e.call(move |s| s.write(ino, 0, &[1u8; 150_000])).unwrap();
}

#[test]
fn dedup_shares_identical_blocks_and_frees_them_with_the_last_reference() {
    let devs = memory_devices(4, 24);
    let (e, fs) = fresh(&devs, 2, 2, true);
    let block: Vec<u8> = (0..BLOCK).map(|i| (i * 31 % 256) as u8).collect();
    let data: Vec<u8> = block.iter().cycle().take(40 * BLOCK).copied().collect();
    let (_, b) = e
        .call(move |s| {
            let a = s.create(fs, "a")?;
            let b = s.create(fs, "b")?;
            s.write(a, 0, &data)?;
            s.write(b, 0, &data)?;
            s.sync()?;
            Ok((a, b))
        })
        .unwrap();
    let sp = e.call(|s| s.space()).unwrap();
    assert!(sp.dedup_ratio >= 80.0, "{sp:?}");
    e.call(move |s| s.unlink(fs, "a")).unwrap();
    e.call(|s| s.sync()).unwrap();
    let got = e.call(move |s| s.read(b, 0, 40 * BLOCK)).unwrap();
    assert!(got.chunks(BLOCK).all(|c| c == block));
    e.call(move |s| s.unlink(fs, "b")).unwrap();
    e.call(|s| s.sync()).unwrap();
    assert_eq!(
        e.call(|s| s.space()).unwrap().physical,
        0,
        "every stripe freed"
    );
}

#[test]
fn the_commit_tick_makes_writes_durable_without_fsync() {
    let devs = memory_devices(4, 24);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open_with(present(&devs), Some(std::time::Duration::from_millis(5)))
        .unwrap();
    let ino = e
        .call(|s| {
            let fs = s.fs_create("data", 2, 2, true, 1 << 30)?;
            let ino = s.create(fs, "a")?;
            s.write(ino, 0, b"written, never fsynced")?;
            Ok(ino)
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    // (The store's own calls leave committing to the caller, or the tick.)
    while e.call(|s| Ok(s.awaits_commit())).unwrap() {
        assert!(t0.elapsed().as_secs() < 10, "the timer never committed");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    drop(e); // a crash: no close, no sync
    let mut e = engine();
    e.open(present(&devs)).unwrap();
    assert_eq!(
        e.call(move |s| s.read(ino, 0, 100)).unwrap(),
        b"written, never fsynced"
    );
}

#[test]
fn garbage_collection_compacts_half_dead_stripes_and_keeps_every_byte() {
    let devs = memory_devices(4, 32);
    let (e, fs) = fresh(&devs, 2, 2, true);
    let mut rng = Rng(21);
    let mut model = Model::new();
    // Two files of shared and unique blocks; then overwrite most of one.
    let a = e.call(move |s| s.create(fs, "a")).unwrap();
    let b = e.call(move |s| s.create(fs, "b")).unwrap();
    for ino in [a, b] {
        let data = rng.data(2 << 20);
        let d = data.clone();
        e.call(move |s| s.write(ino, 0, &d)).unwrap();
        model.insert(ino, data);
    }
    e.call(|s| s.sync()).unwrap();
    for i in 0..400u64 {
        let off = (i * 3 % 512) * BLOCK as u64;
        let data = rng.data(BLOCK);
        let d = data.clone();
        e.call(move |s| s.write(a, off, &d)).unwrap();
        model.get_mut(&a).unwrap()[off as usize..off as usize + BLOCK].copy_from_slice(&data);
    }
    e.call(|s| s.sync()).unwrap();
    let before = e.call(|s| s.space()).unwrap();
    let rep = e.call(|s| s.gc(1000)).unwrap();
    let after = e.call(|s| s.space()).unwrap();
    assert!(rep.stripes > 0, "{rep:?}");
    assert!(after.physical < before.physical, "{before:?} -> {after:?}");
    assert_eq!(after.logical, before.logical);
    check(&e, &model);
    e.close().unwrap();
    let mut e = engine();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    // Dedup references survived the move: dropping one copy keeps the other.
    e.call(move |s| s.unlink(fs, "b")).unwrap();
    model.remove(&b);
    e.call(|s| s.sync()).unwrap();
    check(&e, &model);
}

#[test]
fn background_gc_reclaims_space_so_overwrites_never_run_out() {
    let devs = memory_devices(3, 8);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open_with(present(&devs), Some(std::time::Duration::from_millis(5)))
        .unwrap();
    let (fs, ino) = e
        .call(|s| {
            let fs = s.fs_create("data", 2, 1, false, 1 << 30)?;
            Ok((fs, s.create(fs, "hot")?))
        })
        .unwrap();
    let _ = fs;
    let mut rng = Rng(8);
    let mut model = vec![0u8; 1 << 20];
    // Rewrite a 1 MiB file about 40 times over: ten times the devices'
    // capacity. Only garbage collection makes room for that.
    for round in 0..160 {
        let mut batch = Vec::new();
        for _ in 0..64 {
            let off = rng.below(256) * BLOCK as u64;
            let data = rng.data(BLOCK);
            model[off as usize..off as usize + BLOCK].copy_from_slice(&data);
            batch.push((off, data));
        }
        e.call(move |s| {
            for (off, d) in &batch {
                s.write(ino, *off, d)?;
            }
            s.sync()
        })
        .unwrap_or_else(|err| panic!("round {round}: {err}"));
        // Give the timer a moment, as a real workload's pauses would.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let got = e.call(move |s| s.read(ino, 0, 1 << 20)).unwrap();
    assert!(got[..] == model[..model.len().min(got.len())]);
    e.close().unwrap();
}

#[test]
fn bad_requests_are_clear_errors() {
    let devs = memory_devices(3, 16);
    let (e, fs) = fresh(&devs, 2, 1, true);
    let ino = e.call(move |s| s.create(fs, "a")).unwrap();
    let err = |r: Result<(), StoreError>| r.unwrap_err().to_string();
    assert!(err(e.call(move |s| s.create(fs, "a").map(|_| ()))).contains("already exists"));
    assert!(err(e.call(move |s| s.create(fs, "").map(|_| ()))).contains("name"));
    assert!(err(e.call(move |s| s.create(fs, "nodir/b").map(|_| ()))).contains("no such file"));
    assert!(err(e.call(move |s| s.create(fs, &"x".repeat(300)).map(|_| ()))).contains("255"));
    assert!(err(e.call(move |s| s.create(99, "z").map(|_| ()))).contains("file system 99"));
    assert!(err(e.call(|s| s.write(12345, 0, b"x"))).contains("not found"));
    assert!(err(e.call(move |s| s.write(ino, u64::MAX - 1, b"xyz"))).contains("overflows"));
    assert!(err(e.call(|s| s.fs_create("data", 2, 1, true, 1).map(|_| ()))).contains("exists"));
    assert!(err(e.call(|s| s.fs_create("z", 0, 1, true, 1).map(|_| ()))).contains("k >= 1"));
    // Empty writes, reads past the end and truncation to zero are fine.
    e.call(move |s| s.write(ino, 10, b"")).unwrap();
    assert_eq!(e.call(move |s| s.read(ino, 100, 10)).unwrap(), b"");
    e.call(move |s| s.write(ino, 0, b"hello")).unwrap();
    e.call(move |s| s.truncate(ino, 0)).unwrap();
    assert_eq!(e.call(move |s| s.stat(ino)).unwrap().size, 0);
    e.call(move |s| s.unlink(fs, "a")).unwrap();
    assert!(err(e.call(move |s| s.unlink(fs, "a").map(|_| ()))).contains("no such file"));
}

#[test]
fn corrupted_metadata_regions_never_panic_and_mirrors_recover() {
    let dir = tempfile::tempdir().unwrap();
    let devs = file_devices(dir.path(), 3, 16);
    let (mut e, fs) = fresh(&devs, 2, 1, true);
    let ino = e.call(move |s| s.create(fs, "keep")).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = data.clone();
    e.call(move |s| {
        s.write(ino, 0, &d)?;
        s.sync()
    })
    .unwrap();
    for i in 0..4u64 {
        let d = vec![i as u8; 5000];
        e.call(move |s| {
            s.write(ino, 400_000 + i * 5000, &d)?;
            s.sync()
        })
        .unwrap();
    }
    drop(e); // leave journal records to replay
             // Scribble over device 0's journal and checkpoint slots: the mirrors on
             // devices 1 and 2 still hold them.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("dev0.img"))
        .unwrap();
    let mut rng = Rng(5);
    for _ in 0..400 {
        let block = 1 + rng.below(256 + 1024);
        f.write_all_at(&rng.data(64), block * 4096 + rng.below(4000))
            .unwrap();
    }
    drop(f);
    e = engine();
    e.open(present(&devs)).unwrap();
    let got = e.call(move |s| s.read(ino, 0, 300_000)).unwrap();
    assert!(got == data);
    assert_eq!(e.call(move |s| s.stat(ino)).unwrap().size, 420_000);
    e.close().unwrap();
    // Every copy of the metadata ruined: a clear error, not a panic.
    for i in 0..3 {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(format!("dev{i}.img")))
            .unwrap();
        f.write_all_at(&vec![0xAB; 1280 * 4096], 4096).unwrap();
    }
    let mut e = engine();
    let err = e.open(present(&devs)).unwrap_err();
    assert!(err.to_string().contains("damaged on every device"), "{err}");
}

#[test]
fn devices_fill_to_near_capacity_with_a_clean_error_free_on_unlink_and_fill_again() {
    // Metadata grows in chunk slots of the devices, so "full" is the
    // devices being full, not a metadata area.
    let devs = memory_devices(3, 64);
    let cfg = StoreConfig {
        checkpoint_blocks: 16,
        ..small_config()
    };
    let mut e = engine();
    e.format(devs.clone(), cfg, false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("m", 2, 1, false, 1 << 40).unwrap();
    // Data capacity: k/(k+m) of the chunk slots.
    let room = e.space().unwrap().capacity / 3 * 2;
    let fill = |e: &mut flint_engine::engine::Engine, name: &str| -> u64 {
        let ino = e.create(fs, name).unwrap();
        let mut n = 0u64;
        let err = loop {
            let r = e.write(ino, n * 65536, vec![n as u8; 65536]);
            if n.is_multiple_of(16) {
                e.sync().unwrap();
            }
            match r {
                Ok(()) => n += 1,
                Err(err) => break err,
            }
            assert!(n < 100_000, "the devices never filled");
        };
        assert_eq!(err.errno(), -libc::ENOSPC, "{err}");
        assert!(err.to_string().contains("devices are full"), "{err}");
        e.sync().unwrap();
        n * 65536
    };
    let first = fill(&mut e, "big");
    assert!(
        first as f64 > room as f64 * 0.9,
        "{first} bytes taken of {room} bytes of data capacity"
    );
    e.close().unwrap();
    // It still opens, and everything accepted reads back.
    let mut e = engine();
    e.open(present(&devs)).unwrap();
    let ino = e.lookup(fs, "big").unwrap().unwrap();
    let got = e.read(ino, 0, first as usize).unwrap();
    assert!(got
        .chunks(65536)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(problems.is_empty(), "{problems:?}");
    // Unlinking frees the space, and it fills as far again.
    e.unlink(fs, "big").unwrap();
    e.sync().unwrap();
    let again = fill(&mut e, "again");
    assert!(again as f64 > first as f64 * 0.98, "{again} after {first}");
    e.close().unwrap();
}

#[test]
fn a_power_cut_during_a_replacement_loses_nothing() {
    // Every device (the replacement too) fails at once after N commands of
    // the replacement; after a restart the files are intact and the new
    // device is either a full member or still set aside.
    let mut outcomes = (0, 0);
    for cut in [3i64, 8, 20, 40, 80, 160, 320, 640] {
        let plan = Arc::new(flint_dataplane::bdev::fault::FaultPlan::default());
        let raw = memory_devices(6, 24);
        let devs: Vec<Arc<dyn BlockDevice>> = raw
            .iter()
            .map(|d| FaultyDevice::wrap_shared(d.clone(), plan.clone()) as Arc<dyn BlockDevice>)
            .collect();
        let (e, fs) = fresh(&devs[..5], 3, 2, true);
        let mut rng = Rng(cut as u64);
        let mut model = Model::new();
        workload(&e, fs, &mut rng, &mut model, 60);
        e.close().unwrap();
        // Device 4 is gone; device 5 (blank) replaces it when the power fails.
        let mut some = present(&devs);
        some[4] = None;
        let mut e = engine();
        e.open(some.clone()).unwrap();
        plan.fail_after(cut);
        let replaced = e.replace_device("ram5", false).is_ok();
        drop(e);
        plan.clear();
        let mut e = engine();
        e.open(some).unwrap();
        check(&e, &model);
        let healthy = e.devices().unwrap().iter().filter(|d| d.healthy).count();
        if replaced {
            assert_eq!(healthy, 5, "cut {cut}: replaced but not a member");
            outcomes.0 += 1;
        } else {
            assert!(healthy == 4 || healthy == 5, "cut {cut}: {healthy} healthy");
            outcomes.1 += 1;
        }
        e.close().unwrap();
    }
    // Some cuts landed mid-replacement, some after it.
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
}

#[test]
fn an_older_on_device_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let devs = file_devices(dir.path(), 3, 64);
    let (e, _) = fresh(&devs, 2, 1, false);
    e.close().unwrap();
    drop(devs);
    // Version 2 kept a flat set of names per file system.
    for i in 0..3 {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(format!("dev{i}.img")))
            .unwrap();
        f.seek(SeekFrom::Start(8)).unwrap();
        f.write_all(&2u32.to_le_bytes()).unwrap();
    }
    let devs = file_devices(dir.path(), 3, 64);
    let mut e = engine();
    let err = e.open(present(&devs)).unwrap_err().to_string();
    assert!(
        err.contains("format version 2 is older") && err.contains("reformat"),
        "{err}"
    );
}

#[test]
fn a_lost_device_is_evacuated_in_resumable_steps_and_a_second_loss_is_survived() {
    for shards in [1u32, 2] {
        let devs = memory_devices(5, 24);
        let cfg = StoreConfig {
            shards,
            ..small_config()
        };
        let mut e = engine();
        e.format(devs.clone(), cfg, false).unwrap();
        e.open(present(&devs)).unwrap();
        let fs = e
            .call(move |s| s.fs_create("data", 2, 1, true, 1 << 30))
            .unwrap();
        let mut rng = Rng(71 + u64::from(shards));
        let mut model = Model::new();
        workload(&e, fs, &mut rng, &mut model, 120);
        // Nothing lost: nothing to do.
        let idle = e.evacuate(4, false).unwrap();
        assert!(idle.done() && idle.relocated_chunks == 0, "{idle:?}");
        e.close().unwrap();

        // Devices 1 and 3 gone at once: stripes with a chunk on both are
        // unreadable, and said so.
        let mut two = present(&devs);
        two[1] = None;
        two[3] = None;
        let mut e = engine();
        e.open(two).unwrap();
        let r = e.evacuate(0, false).unwrap();
        assert!(r.unreadable_stripes > 0, "{r:?}");
        e.close().unwrap();
        // Device 1 is gone: every stripe it held a chunk of has none left
        // to spare (2+1), so all of them are urgent.
        let mut some = present(&devs);
        some[1] = None;
        let mut e = engine();
        e.open(some.clone()).unwrap();
        let first = e.evacuate(1, true).unwrap();
        assert!(first.relocated_chunks >= 1, "{first:?}");
        assert!(first.remaining_stripes > 0, "{first:?}");
        assert_eq!(
            first.remaining_stripes, first.unprotected_stripes,
            "{first:?}"
        );
        check(&e, &model);
        // Cut short by a restart, it goes on from where it was.
        e.close().unwrap();
        let mut e = engine();
        e.open(some.clone()).unwrap();
        let resumed = e.evacuate(0, false).unwrap();
        assert!(
            resumed.remaining_stripes < first.remaining_stripes + first.relocated_chunks,
            "{first:?} then {resumed:?}"
        );
        let mut steps = 0;
        let last = loop {
            let r = e.evacuate(2, false).unwrap();
            steps += 1;
            assert_eq!(r.stuck_chunks, 0, "{r:?}");
            if r.done() {
                break r;
            }
            assert!(steps < 10_000, "evacuation makes no progress: {r:?}");
        };
        assert!(steps > 1, "{last:?}");
        check(&e, &model);
        // Writes meanwhile keep full redundancy on the survivors.
        workload(&e, fs, &mut rng, &mut model, 40);
        e.sync().unwrap();
        assert!(e.evacuate(4, false).unwrap().done());
        let scrub = e.scrub(|_| {}).unwrap();
        assert_eq!(
            (scrub.unrecoverable, scrub.unprotected_chunks),
            (0, 0),
            "{scrub:?}"
        );
        e.close().unwrap();

        // A second device lost: 2+1 stripes survive it, since none kept a
        // chunk on the first.
        some[3] = None;
        let mut e = engine();
        e.open(some).unwrap();
        check(&e, &model);
        e.close().unwrap();
    }
}

#[test]
fn a_retiring_device_is_emptied_while_it_serves_and_can_then_leave() {
    let devs = memory_devices(5, 24);
    let (e, fs) = fresh(&devs, 2, 1, true);
    let mut rng = Rng(83);
    let mut model = Model::new();
    workload(&e, fs, &mut rng, &mut model, 120);
    e.set_retiring([2usize].into()).unwrap();
    let first = e.evacuate(0, false).unwrap();
    assert!(first.remaining_stripes > 0, "{first:?}");
    // A retiring device still has its redundancy: nothing is urgent.
    assert_eq!(first.unprotected_stripes, 0, "{first:?}");
    // Writes meanwhile go elsewhere.
    workload(&e, fs, &mut rng, &mut model, 40);
    let mut steps = 0;
    while !e.evacuate(4, false).unwrap().done() {
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    check(&e, &model);
    workload(&e, fs, &mut rng, &mut model, 40);
    e.sync().unwrap();
    assert!(
        e.evacuate(0, false).unwrap().done(),
        "a write went to the retiring device"
    );
    e.close().unwrap();
    // It leaves; another device is lost too: nothing needed it.
    let mut some = present(&devs);
    some[2] = None;
    some[4] = None;
    let mut e = engine();
    e.open(some).unwrap();
    check(&e, &model);
    e.close().unwrap();
}
