//! Directory quotas: exact logical use across shards, hard limits that
//! refuse with EDQUOT, soft limits whose grace turns them hard, nesting,
//! counting a populated directory, boundaries renames cannot cross, and
//! use kept across restarts, crashes, unsets and snapshot restores.

mod common;

use common::{memory_devices, present, small_config, two_reactors, Rng};
use flint_engine::engine::Engine;
use flint_engine::meta::namespace::{NsError, RenameFlags};
use flint_engine::meta::quota::QuotaState;
use flint_engine::store::{StoreConfig, StoreError};

const K: u64 = 1024;

fn used(e: &Engine, fs: u32, path: &str) -> u64 {
    e.quota_list(Some(fs))
        .into_iter()
        .find(|q| q.quota.path == path)
        .unwrap_or_else(|| panic!("no quota on {path}"))
        .used
}

fn set(e: &Engine, fs: u32, path: &str, hard: u64) {
    let q = e.quota_set(fs, path, hard, 0, 0).unwrap();
    e.quota_scan(q.id).unwrap();
}

fn quota_err(r: Result<(), StoreError>) {
    match r {
        Err(e @ StoreError::Quota { .. }) => assert_eq!(e.errno(), -libc::EDQUOT),
        other => panic!("expected EDQUOT, got {other:?}"),
    }
}

fn write_file(e: &Engine, fs: u32, path: &str, len: usize, rng: &mut Rng) -> u64 {
    let ino = e.create(fs, path).unwrap();
    e.write(ino, 0, rng.data(len)).unwrap();
    ino
}

fn run(shards: u32) {
    let devs = memory_devices(5, 64);
    let mut e = two_reactors();
    let cfg = StoreConfig {
        shards,
        ..small_config()
    };
    e.format(devs.clone(), cfg, false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, false, 1 << 40).unwrap();
    let mut rng = Rng(11);

    // A populated tree (directories spread over the shards) is counted
    // before the quota is enforced.
    e.mkdir(fs, "team", 0o755).unwrap();
    let mut expect = 0;
    for d in 0..6 {
        e.mkdir(fs, &format!("team/d{d}"), 0o755).unwrap();
        for f in 0..5 {
            let len = 3000 + d * 1000 + f * 17;
            write_file(&e, fs, &format!("team/d{d}/f{f}"), len, &mut rng);
            expect += len as u64;
        }
    }
    write_file(&e, fs, "outside", 50_000, &mut rng);
    let q = e.quota_set(fs, "/team/", 1 << 20, 0, 0).unwrap();
    assert_eq!((q.path.as_str(), q.state), ("/team", QuotaState::Counting));
    assert_eq!(e.quota_pending(), vec![q.id]);
    e.quota_scan(q.id).unwrap();
    assert!(e.quota_pending().is_empty());
    assert_eq!(used(&e, fs, "/team"), expect);

    // Hard limit: a write growing past it fails whole; one within it works.
    let big = e.create(fs, "team/d0/big").unwrap();
    let room = (1 << 20) - expect;
    quota_err(e.write(big, 0, rng.data(room as usize + 1)));
    quota_err(e.truncate(big, room + 1));
    e.write(big, 0, rng.data(room as usize)).unwrap();
    assert_eq!(used(&e, fs, "/team"), 1 << 20);
    quota_err(e.write(big, room, vec![1]));
    // Overwriting in place grows nothing.
    e.write(big, 0, vec![2; 4096]).unwrap();
    // Outside the quota nothing is limited.
    write_file(&e, fs, "outside2", 2 << 20, &mut rng);
    // Freeing makes room again.
    e.truncate(big, room - 100 * K).unwrap();
    e.unlink(fs, "team/d1/f0").unwrap();
    let after = (1 << 20) - 100 * K - 4000;
    assert_eq!(used(&e, fs, "/team"), after);

    // Boundaries: renames and links across them are EXDEV; inside, fine.
    let exdev = |r: Result<(), StoreError>| match r {
        Err(StoreError::Ns(NsError::QuotaBoundary)) => {}
        other => panic!("expected EXDEV, got {other:?}"),
    };
    exdev(e.rename(fs, "outside", "team/outside", RenameFlags::default()));
    exdev(e.rename(fs, "team/d2/f0", "moved", RenameFlags::default()));
    exdev(e.rename(fs, "team/d2", "d2", RenameFlags::default()));
    exdev(e.link(fs, "outside", "team/l").map(|_| ()));
    e.rename(fs, "team/d2/f0", "team/d3/f0x", RenameFlags::default())
        .unwrap();
    e.rename(fs, "team/d4", "team/d3/d4", RenameFlags::default())
        .unwrap();
    assert_eq!(used(&e, fs, "/team"), after);

    // Nested: the inner limit binds inside, and so does the outer one; the
    // inner may be set larger than what the outer has left.
    set(&e, fs, "team/d3", 4 << 20);
    let inner = used(&e, fs, "/team/d3");
    assert!(inner > 0);
    assert_eq!(
        used(&e, fs, "/team"),
        after,
        "nested bytes count in the parent"
    );
    let f = e.create(fs, "team/d3/d4/new").unwrap();
    let left = (1 << 20) - after;
    quota_err(e.write(f, 0, rng.data(left as usize + 1)));
    e.write(f, 0, rng.data(left as usize)).unwrap();
    assert_eq!(used(&e, fs, "/team/d3"), inner + left);
    exdev(e.rename(fs, "team/d3/d4/new", "team/new", RenameFlags::default()));
    // Four levels deep, not five.
    e.mkdir(fs, "team/d3/d4/x", 0o755).unwrap();
    e.mkdir(fs, "team/d3/d4/x/y", 0o755).unwrap();
    set(&e, fs, "team/d3/d4", 8 << 20);
    set(&e, fs, "team/d3/d4/x", 8 << 20);
    assert!(matches!(
        e.quota_set(fs, "team/d3/d4/x/y", 8 << 20, 0, 0),
        Err(StoreError::Invalid { .. })
    ));

    // A restart and a crash keep every count.
    let snapshot: Vec<(String, u64)> = e
        .quota_list(Some(fs))
        .into_iter()
        .map(|q| (q.quota.path, q.used))
        .collect();
    e.close().unwrap();
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    let now: Vec<(String, u64)> = e
        .quota_list(Some(fs))
        .into_iter()
        .map(|q| (q.quota.path, q.used))
        .collect();
    assert_eq!(now, snapshot);
    e.truncate(f, 0).unwrap();
    drop(e);
    let mut e = two_reactors();
    e.open(present(&devs)).unwrap();
    assert_eq!(used(&e, fs, "/team/d3"), inner);
    assert_eq!(used(&e, fs, "/team"), after);

    // Unset the middle quota: its bytes go to its parent, its child is
    // nested in the parent.
    let q = e.quota_unset(fs, "team/d3/d4").unwrap();
    e.quota_scan(q.id).unwrap();
    assert_eq!(e.quota_list(Some(fs)).len(), 3);
    assert_eq!(used(&e, fs, "/team/d3"), inner);
    let x = e
        .quota_list(Some(fs))
        .into_iter()
        .find(|q| q.quota.path == "/team/d3/d4/x")
        .unwrap();
    let d3 = e
        .quota_list(Some(fs))
        .into_iter()
        .find(|q| q.quota.path == "/team/d3")
        .unwrap();
    assert_eq!(x.quota.parent, d3.quota.id);

    // A restore counts again from the snapshot's files.
    e.snapshot_create(fs, "s").unwrap();
    write_file(&e, fs, "team/d0/later", 70_000, &mut rng);
    assert_eq!(used(&e, fs, "/team"), after + 70_000);
    e.snapshot_restore(fs, "s", None).unwrap();
    assert_eq!(used(&e, fs, "/team"), after);
    assert_eq!(used(&e, fs, "/team/d3"), inner);
    assert!(e.quota_pending().is_empty());

    // Soft limit with no grace: allowed over until the tick starts the
    // grace, refused once it is over, back once use drops.
    let q = e.quota_set(fs, "team", 0, after + 10 * K, 0).unwrap();
    assert_eq!(
        q.state,
        QuotaState::Enforcing,
        "changing limits keeps the count"
    );
    let g = write_file(&e, fs, "team/d0/g", 20_000, &mut rng);
    let events = e.quota_tick(flint_engine::store::now_nanos()).unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [flint_engine::engine::QuotaEvent::SoftExceeded(..)]
        ),
        "{events:?}"
    );
    quota_err(e.write(g, 20_000, vec![1]));
    let events = e.quota_tick(flint_engine::store::now_nanos()).unwrap();
    assert!(events
        .iter()
        .any(|v| matches!(v, flint_engine::engine::QuotaEvent::Refused(_, _, 1))));
    e.unlink(fs, "team/d0/g").unwrap();
    let events = e.quota_tick(flint_engine::store::now_nanos()).unwrap();
    assert!(matches!(
        events.as_slice(),
        [flint_engine::engine::QuotaEvent::BelowSoft(..)]
    ));
    let ok = e.create(fs, "team/d0/ok").unwrap();
    e.write(ok, 0, vec![3; 100]).unwrap();

    let mut problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    problems.extend(e.fsck_names().unwrap());
    assert!(problems.is_empty(), "fsck: {problems:?}");
    e.close().unwrap();
}

#[test]
fn quotas_on_one_shard() {
    run(1);
}

#[test]
fn quotas_on_four_shards() {
    run(4);
}

/// Bytes of the regular files and symlink targets under `path` (hard
/// links counted once per inode): what `stat` shows of them.
fn walk(e: &Engine, fs: u32, path: &str, seen: &mut std::collections::HashSet<u64>) -> u64 {
    let mut total = 0;
    for st in e.list_dir(fs, path).unwrap() {
        let child = format!("{path}/{}", st.name);
        match st.mode & libc::S_IFMT {
            libc::S_IFDIR => total += walk(e, fs, &child, seen),
            libc::S_IFREG | libc::S_IFLNK if seen.insert(st.ino) => total += st.size,
            _ => {}
        }
    }
    total
}

/// Power cuts at exact I/Os among writes, truncates, creates, unlinks and
/// quota scans (4 shards): after every reopen each quota's use is the
/// bytes its directory's files hold, and no acknowledged write passed a
/// hard limit.
#[test]
fn power_cuts_keep_quota_use_exact() {
    use flint_dataplane::bdev::fault::{FaultPlan, FaultyDevice};
    use flint_dataplane::bdev::BlockDevice;
    use std::sync::Arc;

    let rounds: usize = std::env::var("FLINT_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let seed = std::env::var("FLINT_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let plan = Arc::new(FaultPlan::default());
    let devs: Vec<Arc<dyn BlockDevice>> = memory_devices(5, 160)
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
    let dirs = ["a", "a/x", "a/x/y", "b"];
    for d in dirs {
        e.mkdir(fs, d, 0o755).unwrap();
    }
    set(&e, fs, "a", 3 << 20);
    let mut rng = Rng(seed);
    let mut next = 0;
    for round in 0..rounds {
        plan.fail_after(rng.below(3000) as i64);
        loop {
            let dir = dirs[rng.below(dirs.len() as u64) as usize];
            let r = match rng.below(10) {
                0..=4 => {
                    next += 1;
                    let path = format!("{dir}/f{next}");
                    e.create(fs, &path).and_then(|ino| {
                        let len = 1 + rng.below(200_000) as usize;
                        let off = rng.below(3) * 4096 + rng.below(4096);
                        e.write(ino, off, rng.data(len))
                    })
                }
                5 | 6 => {
                    let list = e.list_dir(fs, dir);
                    match list {
                        Ok(l) if !l.is_empty() => {
                            let st = &l[rng.below(l.len() as u64) as usize];
                            if st.mode & libc::S_IFMT == libc::S_IFLNK {
                                e.unlink(fs, &format!("{dir}/{}", st.name))
                            } else if st.mode & libc::S_IFMT != libc::S_IFREG {
                                continue;
                            } else if rng.below(2) == 0 {
                                e.unlink(fs, &format!("{dir}/{}", st.name))
                            } else {
                                e.truncate(st.ino, rng.below(st.size + 50_000))
                            }
                        }
                        Ok(_) => continue,
                        Err(x) => Err(x),
                    }
                }
                // A nested quota set or unset, counted in flight.
                7 => {
                    let has = e
                        .quota_list(Some(fs))
                        .iter()
                        .any(|q| q.quota.path == "/a/x");
                    if has {
                        e.quota_unset(fs, "a/x").and_then(|q| e.quota_scan(q.id))
                    } else {
                        e.quota_set(fs, "a/x", 1 << 20, 0, 0)
                            .and_then(|q| e.quota_scan(q.id))
                    }
                }
                8 => {
                    next += 1;
                    let target = "t".repeat(1 + rng.below(300) as usize);
                    e.symlink(fs, &target, &format!("{dir}/l{next}"))
                        .map(|_| ())
                }
                _ => continue,
            };
            match r {
                Ok(()) | Err(StoreError::Quota { .. }) => {}
                Err(_) => break,
            }
        }
        drop(e);
        plan.clear();
        e = two_reactors();
        e.open(present(&devs)).unwrap();
        for id in e.quota_pending() {
            e.quota_scan(id).unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        let under_a = walk(&e, fs, "a", &mut seen);
        let quotas = e.quota_list(Some(fs));
        let a = quotas.iter().find(|q| q.quota.path == "/a").unwrap();
        assert_eq!(
            a.used, under_a,
            "round {round}: /a counts {} bytes, its files hold {under_a}",
            a.used
        );
        assert!(
            a.used <= 3 << 20,
            "round {round}: /a holds {} bytes, past its hard limit",
            a.used
        );
        if let Some(x) = quotas.iter().find(|q| q.quota.path == "/a/x") {
            let under_x = walk(&e, fs, "a/x", &mut std::collections::HashSet::new());
            assert_eq!(x.used, under_x, "round {round}: /a/x");
        }
        let mut problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
        problems.extend(e.fsck_names().unwrap());
        assert!(problems.is_empty(), "round {round}: fsck: {problems:?}");
        eprintln!(
            "round {round}: /a holds {under_a} bytes, quotas {}",
            quotas.len()
        );
    }
    e.close().unwrap();
}
