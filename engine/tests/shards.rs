//! The sharded engine: four shards on two reactors over the same devices,
//! files spread over the shards by name, requests routed to owners, every
//! shard recovering its own slice of the journal, checkpoints and slots.

mod common;

use common::{memory_devices, present, small_config, Rng};
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::store::StoreConfig;
use std::collections::{BTreeMap, BTreeSet};

fn two_reactors() -> Engine {
    let cpus = flint_dataplane::placement::allowed_cores().unwrap();
    let cores: Vec<usize> = cpus.iter().copied().cycle().take(2).collect();
    let distinct = cores[0] != cores[1];
    Engine::start(&ReactorConfig {
        cores: if distinct { cores } else { vec![] },
        pin: false,
        ..ReactorConfig::default()
    })
    .unwrap()
}

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
    let shards: BTreeSet<u32> = inos
        .iter()
        .map(|&i| e.shard_map().shard_of_ino(i))
        .collect();
    assert!(shards.len() >= 3, "files landed on shards {shards:?}");
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
    let problems: Vec<String> = e.broadcast(|s| Ok(s.fsck())).unwrap().concat();
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
    // Unsynced writes vanish in a crash; synced ones stay, on every shard.
    for &ino in &inos {
        e.write(ino, 0, vec![0xEE; 5000]).unwrap();
    }
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    check(&e, &model);
    e.unlink(inos[0]).unwrap();
    e.sync().unwrap();
    assert_eq!(e.list(fs).unwrap().len(), 11);
    e.close().unwrap();
}
