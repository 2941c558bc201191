use std::collections::{BTreeMap, HashMap, HashSet};

use super::*;
use crate::meta::btree::{tests::Rng, MemPages, PAGE};

const CTX: Ctx = Ctx {
    uid: 1000,
    gid: 100,
    now: 1_700_000_000_000_000_000,
};

fn fresh() -> Standalone<MemPages> {
    Standalone::new(MemPages::new(), Pager::new(1, 16 * PAGE), CTX, 0o755).unwrap()
}

fn clean(ns: &mut Standalone<MemPages>) {
    assert_eq!(ns.ns().fsck().unwrap(), Vec::<String>::new());
}

/// Every entry of every directory reachable from the root, by walking
/// readdir in small pages.
fn entries(ns: &mut Standalone<MemPages>) -> BTreeMap<(Ino, Vec<u8>), Ino> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![ROOT];
    while let Some(d) = dirs.pop() {
        let mut cookie = 0;
        loop {
            let page = ns.ns().readdir(d, cookie, 7).unwrap();
            if page.is_empty() {
                break;
            }
            for e in page {
                cookie = e.cookie;
                if e.kind == Kind::Dir {
                    dirs.push(e.ino);
                }
                out.insert((d, e.name), e.ino);
            }
        }
    }
    out
}

#[test]
fn every_refusal_has_its_errno() {
    let mut ns = fresh();
    let d = ns.ns().mkdir(ROOT, b"d", 0o755, CTX).unwrap().ino;
    let f = ns.ns().create(ROOT, b"f", 0o644, CTX).unwrap().ino;
    let sub = ns.ns().mkdir(d, b"sub", 0o755, CTX).unwrap().ino;
    ns.ns().create(d, b"g", 0o644, CTX).unwrap();
    ns.ns().mkdir(ROOT, b"empty", 0o755, CTX).unwrap();
    let long = vec![b'x'; NAME_MAX + 1];
    let e = |r: Result<Attr>| r.map(|_| ()).unwrap_err().errno();
    let rm = |r: Result<Removed>| r.map(|_| ()).unwrap_err().errno();
    let rn = |r: Result<Option<Removed>>| r.map(|_| ()).unwrap_err().errno();
    let plain = RenameFlags::default();
    let cases: Vec<(&str, i32, i32)> = vec![
        (
            "create existing",
            e(ns.ns().create(ROOT, b"f", 0o644, CTX)),
            libc::EEXIST,
        ),
        (
            "mkdir existing",
            e(ns.ns().mkdir(ROOT, b"d", 0o755, CTX)),
            libc::EEXIST,
        ),
        (
            "create in a file",
            e(ns.ns().create(f, b"x", 0o644, CTX)),
            libc::ENOTDIR,
        ),
        (
            "create in nothing",
            e(ns.ns().create(999, b"x", 0o644, CTX)),
            libc::ENOENT,
        ),
        (
            "long name",
            e(ns.ns().create(ROOT, &long, 0o644, CTX)),
            libc::ENAMETOOLONG,
        ),
        (
            "slash",
            e(ns.ns().create(ROOT, b"a/b", 0o644, CTX)),
            libc::EINVAL,
        ),
        (
            "dot",
            e(ns.ns().mkdir(ROOT, b".", 0o755, CTX)),
            libc::EINVAL,
        ),
        (
            "empty name",
            e(ns.ns().create(ROOT, b"", 0o644, CTX)),
            libc::EINVAL,
        ),
        (
            "lookup missing",
            e(ns.ns().lookup(ROOT, b"nope")),
            libc::ENOENT,
        ),
        (
            "lookup in a file",
            e(ns.ns().lookup(f, b"x")),
            libc::ENOTDIR,
        ),
        (
            "unlink a dir",
            rm(ns.ns().unlink(ROOT, b"d", CTX)),
            libc::EISDIR,
        ),
        (
            "unlink missing",
            rm(ns.ns().unlink(ROOT, b"nope", CTX)),
            libc::ENOENT,
        ),
        (
            "rmdir a file",
            rm(ns.ns().rmdir(ROOT, b"f", CTX)),
            libc::ENOTDIR,
        ),
        (
            "rmdir non-empty",
            rm(ns.ns().rmdir(ROOT, b"d", CTX)),
            libc::ENOTEMPTY,
        ),
        (
            "rmdir ..",
            rm(ns.ns().rmdir(d, b"..", CTX)),
            libc::ENOTEMPTY,
        ),
        ("rmdir .", rm(ns.ns().rmdir(d, b".", CTX)), libc::EINVAL),
        (
            "rename missing",
            rn(ns.ns().rename(ROOT, b"nope", ROOT, b"x", plain, CTX)),
            libc::ENOENT,
        ),
        (
            "dir under itself",
            rn(ns.ns().rename(ROOT, b"d", sub, b"x", plain, CTX)),
            libc::EINVAL,
        ),
        (
            "dir into itself",
            rn(ns.ns().rename(ROOT, b"d", d, b"x", plain, CTX)),
            libc::EINVAL,
        ),
        (
            "dir onto file",
            rn(ns.ns().rename(ROOT, b"d", ROOT, b"f", plain, CTX)),
            libc::ENOTDIR,
        ),
        (
            "file onto dir",
            rn(ns.ns().rename(ROOT, b"f", ROOT, b"empty", plain, CTX)),
            libc::EISDIR,
        ),
        (
            "dir onto non-empty dir",
            rn(ns.ns().rename(ROOT, b"empty", ROOT, b"d", plain, CTX)),
            libc::ENOTEMPTY,
        ),
        (
            "noreplace",
            rn(ns.ns().rename(
                ROOT,
                b"f",
                d,
                b"g",
                RenameFlags {
                    noreplace: true,
                    exchange: false,
                },
                CTX,
            )),
            libc::EEXIST,
        ),
        (
            "exchange with nothing",
            rn(ns.ns().rename(
                ROOT,
                b"f",
                ROOT,
                b"nope",
                RenameFlags {
                    noreplace: false,
                    exchange: true,
                },
                CTX,
            )),
            libc::ENOENT,
        ),
        (
            "both flags",
            rn(ns.ns().rename(
                ROOT,
                b"f",
                ROOT,
                b"x",
                RenameFlags {
                    noreplace: true,
                    exchange: true,
                },
                CTX,
            )),
            libc::EINVAL,
        ),
        (
            "link a dir",
            e(ns.ns().link(d, ROOT, b"x", CTX)),
            libc::EPERM,
        ),
        (
            "link onto a name",
            e(ns.ns().link(f, ROOT, b"d", CTX)),
            libc::EEXIST,
        ),
        (
            "readlink a file",
            ns.ns().readlink(f).unwrap_err().errno(),
            libc::EINVAL,
        ),
        (
            "long target",
            e(ns.ns().symlink(ROOT, b"s", &vec![b'a'; PATH_MAX + 1], CTX)),
            libc::ENAMETOOLONG,
        ),
        (
            "no xattr",
            ns.ns().getxattr(f, b"user.x").unwrap_err().errno(),
            libc::ENODATA,
        ),
        (
            "xattr too big",
            ns.ns()
                .setxattr(f, b"user.x", &[0; MAX_VALUE + 1], XattrMode::Any, CTX)
                .unwrap_err()
                .errno(),
            libc::E2BIG,
        ),
        (
            "replace missing xattr",
            ns.ns()
                .setxattr(f, b"user.x", b"1", XattrMode::Replace, CTX)
                .unwrap_err()
                .errno(),
            libc::ENODATA,
        ),
        (
            "size of a dir",
            e(ns.ns().setattr(
                d,
                SetAttr {
                    size: Some(1),
                    ..Default::default()
                },
                CTX,
            )),
            libc::EISDIR,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, -want, "{what}");
    }
    // Nothing a refusal touched changed anything.
    clean(&mut ns);
}

#[test]
fn attributes_links_symlinks_and_xattrs() {
    let mut ns = fresh();
    let later = Ctx {
        now: CTX.now + 5,
        ..CTX
    };
    let f = ns.ns().create(ROOT, b"f", 0o640, CTX).unwrap();
    assert_eq!(
        (f.mode(), f.uid, f.gid, f.nlink),
        (libc::S_IFREG | 0o640, 1000, 100, 1)
    );
    let l = ns.ns().link(f.ino, ROOT, b"hard", later).unwrap();
    assert_eq!((l.nlink, l.ctime), (2, later.now));
    assert_eq!(ns.ns().getattr(ROOT).unwrap().mtime, later.now);
    assert_eq!(
        ns.ns().unlink(ROOT, b"f", later).unwrap(),
        Removed {
            ino: f.ino,
            last: false
        }
    );
    assert_eq!(ns.ns().lookup(ROOT, b"hard").unwrap().nlink, 1);
    let target = vec![b'z'; 3000];
    let s = ns.ns().symlink(ROOT, b"s", &target, CTX).unwrap();
    assert_eq!(s.size, 3000);
    assert_eq!(ns.ns().readlink(s.ino).unwrap(), target);
    ns.ns()
        .setxattr(f.ino, b"user.a", b"1", XattrMode::Create, CTX)
        .unwrap();
    ns.ns()
        .setxattr(f.ino, b"user.b", b"22", XattrMode::Any, CTX)
        .unwrap();
    assert_eq!(ns.ns().getxattr(f.ino, b"user.b").unwrap(), b"22");
    assert_eq!(
        ns.ns().listxattr(f.ino).unwrap(),
        vec![b"user.a".to_vec(), b"user.b".to_vec()]
    );
    ns.ns().removexattr(f.ino, b"user.a", CTX).unwrap();
    let a = ns
        .ns()
        .setattr(
            f.ino,
            SetAttr {
                perm: Some(0o600),
                size: Some(10),
                uid: Some(7),
                ..Default::default()
            },
            later,
        )
        .unwrap();
    assert_eq!(
        (a.perm, a.size, a.uid, a.mtime, a.ctime),
        (0o600, 10, 7, later.now, later.now)
    );
    // The last link goes: the inode and its xattrs go with it.
    assert_eq!(
        ns.ns().unlink(ROOT, b"hard", CTX).unwrap(),
        Removed {
            ino: f.ino,
            last: true
        }
    );
    assert_eq!(ns.ns().getattr(f.ino).unwrap_err(), NsError::NotFound);
    assert!(ns.ns().listxattr(f.ino).unwrap().is_empty());
    ns.ns().unlink(ROOT, b"s", CTX).unwrap();
    clean(&mut ns);
    // Only the root is left.
    assert_eq!(ns.tree.len(), 1);
}

#[test]
fn exchange_swaps_directories_between_parents() {
    let mut ns = fresh();
    let a = ns.ns().mkdir(ROOT, b"a", 0o755, CTX).unwrap().ino;
    let b = ns.ns().mkdir(ROOT, b"b", 0o755, CTX).unwrap().ino;
    let x = ns.ns().mkdir(a, b"x", 0o755, CTX).unwrap().ino;
    let y = ns.ns().create(b, b"y", 0o644, CTX).unwrap().ino;
    let ex = RenameFlags {
        noreplace: false,
        exchange: true,
    };
    ns.ns().rename(a, b"x", b, b"y", ex, CTX).unwrap();
    assert_eq!(ns.ns().lookup(a, b"x").unwrap().ino, y);
    assert_eq!(ns.ns().lookup(b, b"y").unwrap().ino, x);
    assert_eq!(ns.ns().getattr(x).unwrap().parent, b);
    assert_eq!(
        (
            ns.ns().getattr(a).unwrap().nlink,
            ns.ns().getattr(b).unwrap().nlink
        ),
        (2, 3)
    );
    clean(&mut ns);
    // Exchanging a directory with its own ancestor's entry would loop.
    assert_eq!(
        ns.ns().rename(ROOT, b"b", b, b"y", ex, CTX).unwrap_err(),
        NsError::Invalid("a directory cannot move under itself")
    );
    clean(&mut ns);
}

#[test]
fn readdir_returns_every_lasting_entry_once_under_churn() {
    let mut ns = fresh();
    let d = ns.ns().mkdir(ROOT, b"big", 0o755, CTX).unwrap().ino;
    let n = 10_000;
    for i in 0..n {
        ns.ns()
            .create(d, format!("keep-{i}").as_bytes(), 0o644, CTX)
            .unwrap();
        if i % 3 == 0 {
            ns.ns()
                .create(d, format!("churn-{i}").as_bytes(), 0o644, CTX)
                .unwrap();
        }
    }
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    let (mut cookie, mut step) = (0, 0);
    loop {
        let page = ns.ns().readdir(d, cookie, 100).unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            *seen.entry(e.name.clone()).or_default() += 1;
        }
        cookie = page.last().unwrap().cookie;

        // Meanwhile others come and go, and a lasting entry is renamed
        // onto itself (a no-op).
        step += 1;
        let _ = ns
            .ns()
            .unlink(d, format!("churn-{}", step * 3).as_bytes(), CTX);
        if step <= 100 {
            ns.ns()
                .create(d, format!("new-{step}").as_bytes(), 0o644, CTX)
                .unwrap();
        }
        ns.ns()
            .rename(d, b"keep-5", d, b"keep-5", RenameFlags::default(), CTX)
            .unwrap();
    }
    for i in 0..n {
        assert_eq!(
            seen.get(format!("keep-{i}").as_bytes()),
            Some(&1),
            "keep-{i}"
        );
    }
    assert!(seen.values().all(|c| *c == 1));
    clean(&mut ns);
}

#[test]
fn random_operations_match_a_model_across_commits_and_crashes() {
    for seed in 1..=4u64 {
        let mut r = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut ns = fresh();
        // The model: (dir, name) -> inode; what the namespace must list.
        let mut model: BTreeMap<(Ino, Vec<u8>), Ino> = BTreeMap::new();
        let mut dirs: Vec<Ino> = vec![ROOT];
        let mut committed: Option<(Option<crate::meta::btree::PagePtr>, u64, Ids)> = None;
        let mut committed_model = model.clone();
        let mut committed_dirs = dirs.clone();
        for step in 0..3000 {
            let dir = dirs[r.below(dirs.len() as u64) as usize];
            let name = format!("n{}", r.below(12)).into_bytes();
            let dir2 = dirs[r.below(dirs.len() as u64) as usize];
            let name2 = format!("n{}", r.below(12)).into_bytes();
            match r.below(12) {
                0..=2 => {
                    if let Ok(a) = ns.ns().create(dir, &name, 0o644, CTX) {
                        model.insert((dir, name), a.ino);
                    }
                }
                3..=4 => {
                    if let Ok(a) = ns.ns().mkdir(dir, &name, 0o755, CTX) {
                        model.insert((dir, name), a.ino);
                        dirs.push(a.ino);
                    }
                }
                5 => {
                    if ns.ns().unlink(dir, &name, CTX).is_ok() {
                        model.remove(&(dir, name));
                    }
                }
                6 => {
                    if let Ok(rm) = ns.ns().rmdir(dir, &name, CTX) {
                        model.remove(&(dir, name));
                        dirs.retain(|d| *d != rm.ino);
                    }
                }
                7..=8 => {
                    let flags = RenameFlags {
                        noreplace: r.below(4) == 0,
                        exchange: r.below(4) == 0,
                    };
                    if let Ok(rep) = ns.ns().rename(dir, &name, dir2, &name2, flags, CTX) {
                        if flags.exchange {
                            let a = model[&(dir, name.clone())];
                            let b = model[&(dir2, name2.clone())];
                            model.insert((dir, name), b);
                            model.insert((dir2, name2), a);
                        } else if (dir, &name) != (dir2, &name2) {
                            let ino = model.remove(&(dir, name)).unwrap();
                            let old = model.insert((dir2, name2), ino);
                            if let (Some(rep), Some(old)) = (rep, old) {
                                assert_eq!(rep.ino, old);
                                if rep.last && dirs.contains(&old) {
                                    dirs.retain(|d| *d != old);
                                }
                            }
                        }
                    }
                }
                9 => {
                    let src = model
                        .iter()
                        .nth(r.below(model.len().max(1) as u64) as usize);
                    if let Some((_, &ino)) = src {
                        if ns.ns().link(ino, dir2, &name2, CTX).is_ok() {
                            model.insert((dir2, name2), ino);
                        }
                    }
                }
                10 => {
                    ns.commit()
                        .unwrap()
                        .into_iter()
                        .for_each(|p| ns.io.free(p.addr));
                    committed = Some((ns.tree.root(), ns.tree.len(), ns.ids));
                    committed_model = model.clone();
                    committed_dirs = dirs.clone();
                }
                _ => {
                    if let Some((root, len, ids)) = committed {
                        // Crash: back to the last commit, cache cold.
                        let epoch = ns.pager.epoch();
                        let mut io = std::mem::take(&mut ns.io);
                        io.forget_allocations();
                        ns = Standalone {
                            io,
                            pager: Pager::new(epoch, 16 * PAGE),
                            tree: Tree::open(root, len),
                            ids,
                        };
                        model = committed_model.clone();
                        dirs = committed_dirs.clone();
                    }
                }
            }
            if step % 100 == 0 {
                assert_eq!(entries(&mut ns), model, "seed {seed} step {step}");
                clean(&mut ns);
            }
        }
        assert_eq!(entries(&mut ns), model);
        clean(&mut ns);
        let inodes: HashSet<Ino> = model.values().copied().collect();
        assert!(ns.tree.len() as usize > inodes.len());
    }
}

#[test]
fn names_up_to_name_max_work_and_long_ones_that_share_a_head_stay_apart() {
    let mut ns = fresh();
    let mut a = vec![b'a'; NAME_MAX];
    let mut b = a.clone();
    b[NAME_MAX - 1] = b'b';
    a[NAME_MAX - 2] = b'c';
    let ia = ns.ns().create(ROOT, &a, 0o644, CTX).unwrap().ino;
    let ib = ns.ns().create(ROOT, &b, 0o644, CTX).unwrap().ino;
    assert_ne!(ia, ib);
    assert_eq!(ns.ns().lookup(ROOT, &a).unwrap().ino, ia);
    assert_eq!(ns.ns().lookup(ROOT, &b).unwrap().ino, ib);
    let page = ns.ns().readdir(ROOT, 0, 10).unwrap();
    let names: HashSet<Vec<u8>> = page.into_iter().map(|e| e.name).collect();
    assert!(names.contains(&a) && names.contains(&b));
    let c = vec![b'z'; NAME_MAX];
    ns.ns()
        .rename(ROOT, &a, ROOT, &c, RenameFlags::default(), CTX)
        .unwrap();
    assert_eq!(ns.ns().lookup(ROOT, &c).unwrap().ino, ia);
    assert_eq!(ns.ns().lookup(ROOT, &a).unwrap_err(), NsError::NotFound);
    ns.ns().unlink(ROOT, &b, CTX).unwrap();
    ns.ns().unlink(ROOT, &c, CTX).unwrap();
    assert_eq!(ns.ns().readdir(ROOT, 0, 10).unwrap(), vec![]);
    clean(&mut ns);
}
