//! Block devices through reactors: data round trips on every backend and
//! io_uring mode, and every device error reaching the caller typed.

mod common;

use common::{io, pattern, AlignedBuf};
use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec, IoCmd, QpairOptions};
use flint_dataplane::config::ByteSize;
use flint_dataplane::mempool::{BufPool, HugePages};
use flint_dataplane::{Error, IoError};
use std::path::Path;
use std::sync::Arc;

fn uring_spec(path: &Path, size: &str) -> DeviceSpec {
    let mut s = DeviceSpec::new("t0", Backend::Uring);
    s.path = Some(path.to_path_buf());
    s.size = Some(ByteSize::parse(size).unwrap());
    s
}

fn mem_spec(backend: Backend) -> DeviceSpec {
    let mut s = DeviceSpec::new("m0", backend);
    s.size = Some(ByteSize(8 << 20));
    s
}

/// Writes patterned blocks (pool buffers, registered, and plain aligned
/// memory), zeroes some, flushes, reads everything back and compares.
fn round_trip(dev: Arc<dyn BlockDevice>, stores_data: bool) {
    let set = common::reactors(1);
    set.call(0, move |core| {
        let g = dev.geometry();
        let bs = g.block_size as usize;
        let mut qp = dev.queue_pair(core, &QpairOptions { depth: 16 }).unwrap();
        let mut pool = BufPool::new(4, 8 * bs, HugePages::Auto).unwrap();
        // SAFETY (test): the pool outlives the queue pair (dropped after it).
        unsafe { qp.register_memory(pool.region()).unwrap() };
        let mut fixed = pool.get().unwrap();
        let mut plain = AlignedBuf::new(8 * bs);
        let lbas = [0u64, 9, 100, g.blocks - 8];
        for (i, &lba) in lbas.iter().enumerate() {
            let (ptr, buf) = if i % 2 == 0 {
                (fixed.as_mut_ptr(), fixed.as_mut_slice())
            } else {
                (plain.ptr(), plain.as_mut_slice())
            };
            pattern(buf, lba, 1);
            assert_eq!(
                io(&mut *qp, IoCmd::write(lba, 8, ptr, i as u64)),
                Ok(8 * bs as u32)
            );
        }
        io(&mut *qp, IoCmd::write_zeroes(100, 2, 50)).unwrap();
        io(&mut *qp, IoCmd::flush(51)).unwrap();
        if stores_data {
            for (i, &lba) in lbas.iter().enumerate() {
                let mut back = AlignedBuf::new(8 * bs);
                let ptr = if i % 2 == 0 {
                    fixed.as_mut_slice().fill(0);
                    fixed.as_mut_ptr()
                } else {
                    back.ptr()
                };
                assert_eq!(
                    io(&mut *qp, IoCmd::read(lba, 8, ptr, 60)),
                    Ok(8 * bs as u32)
                );
                let got = if i % 2 == 0 {
                    fixed.as_slice()
                } else {
                    back.as_slice()
                };
                let mut want = vec![0u8; 8 * bs];
                pattern(&mut want, lba, 1);
                if lba == 100 {
                    want[..2 * bs].fill(0);
                }
                assert!(got == &want[..], "block {lba} read back wrong");
            }
        }
        drop(qp);
        pool.put(fixed).unwrap();
    })
    .unwrap();
}

#[test]
fn memory_round_trip() {
    round_trip(bdev::open(&mem_spec(Backend::Memory)).unwrap(), true);
}

#[test]
fn null_completes_everything() {
    round_trip(bdev::open(&mem_spec(Backend::Null)).unwrap(), false);
}

#[test]
fn uring_round_trip_on_the_core_ring() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(
        bdev::open(&uring_spec(&dir.path().join("d"), "8MiB")).unwrap(),
        true,
    );
}

#[test]
fn uring_round_trip_with_batched_submission() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = uring_spec(&dir.path().join("d"), "8MiB");
    spec.batch_submit = true;
    round_trip(bdev::open(&spec).unwrap(), true);
}

#[test]
fn uring_round_trip_with_sqpoll() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = uring_spec(&dir.path().join("d"), "8MiB");
    spec.sqpoll = true;
    round_trip(bdev::open(&spec).unwrap(), true);
}

#[test]
fn uring_iopoll_falls_back_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = uring_spec(&dir.path().join("d"), "8MiB");
    spec.iopoll = true;
    let dev = bdev::uring::UringDevice::open(&spec).unwrap();
    eprintln!("iopoll in use: {}", dev.iopoll());
    round_trip(Arc::new(dev), true);
}

#[test]
fn uring_buffered_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = uring_spec(&dir.path().join("d"), "8MiB");
    spec.direct = false;
    round_trip(bdev::open(&spec).unwrap(), true);
}

#[test]
fn queue_pairs_on_two_cores_share_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let dev = bdev::open(&uring_spec(&dir.path().join("d"), "8MiB")).unwrap();
    let set = common::reactors(2);
    let pendings: Vec<_> = (0..2u64)
        .map(|i| {
            let dev = dev.clone();
            set.run_on(i as usize, move |core| {
                let mut qp = dev.queue_pair(core, &QpairOptions { depth: 8 }).unwrap();
                let mut buf = AlignedBuf::new(4096);
                for b in 0..64u64 {
                    let lba = i * 1000 + b;
                    pattern(buf.as_mut_slice(), lba, 7);
                    io(&mut *qp, IoCmd::write(lba, 1, buf.ptr(), b)).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for p in pendings {
        p.wait().unwrap();
    }
    set.call(0, move |core| {
        let mut qp = dev.queue_pair(core, &QpairOptions { depth: 8 }).unwrap();
        let mut buf = AlignedBuf::new(4096);
        let mut want = vec![0u8; 4096];
        for i in 0..2u64 {
            for b in 0..64u64 {
                let lba = i * 1000 + b;
                io(&mut *qp, IoCmd::read(lba, 1, buf.ptr(), 0)).unwrap();
                pattern(&mut want, lba, 7);
                assert!(buf.as_slice() == &want[..], "block {lba}");
            }
        }
    })
    .unwrap();
}

#[test]
fn out_of_range_misaligned_and_full_queues_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let devs = [
        bdev::open(&uring_spec(&dir.path().join("d"), "1MiB")).unwrap(),
        bdev::open(&mem_spec(Backend::Memory)).unwrap(),
        bdev::open(&mem_spec(Backend::Null)).unwrap(),
    ];
    let set = common::reactors(1);
    for dev in devs {
        set.call(0, move |core| {
            let g = dev.geometry();
            let mut qp = dev.queue_pair(core, &QpairOptions { depth: 2 }).unwrap();
            let mut buf = AlignedBuf::new(3 * 4096);
            let r = io(&mut *qp, IoCmd::read(g.blocks - 1, 2, buf.ptr(), 1));
            assert!(
                matches!(r, Err(IoError::OutOfRange { .. })),
                "{}: {r:?}",
                dev.kind()
            );
            let r = io(&mut *qp, IoCmd::read(u64::MAX, 1, buf.ptr(), 1));
            assert!(
                matches!(r, Err(IoError::OutOfRange { .. })),
                "{}: {r:?}",
                dev.kind()
            );
            if dev.kind() == "uring" {
                // SAFETY (test): 512 bytes into a 12 KiB buffer leaves 4 KiB.
                let odd = unsafe { buf.ptr().add(512) };
                let r = io(&mut *qp, IoCmd::read(0, 1, odd, 1));
                assert!(matches!(r, Err(IoError::Misaligned { .. })), "{r:?}");
            }
            // SAFETY (test): the buffer outlives the polling below.
            unsafe {
                qp.submit(&IoCmd::read(0, 1, buf.ptr(), 1)).unwrap();
                qp.submit(&IoCmd::read(1, 1, buf.ptr().add(4096), 2))
                    .unwrap();
                assert_eq!(
                    qp.submit(&IoCmd::read(2, 1, buf.ptr().add(8192), 3)),
                    Err(IoError::QueueFull),
                    "{}",
                    dev.kind()
                );
            }
            let mut out = [bdev::Completion::EMPTY; 4];
            let mut n = 0;
            while n < 2 {
                n += qp.poll(&mut out[n..]);
            }
        })
        .unwrap();
    }
}

#[test]
fn a_short_read_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let dev = bdev::open(&uring_spec(&path, "1MiB")).unwrap();
    // Another process shrinks the file under the device.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(512 << 10)
        .unwrap();
    let set = common::reactors(1);
    set.call(0, move |core| {
        let mut qp = dev.queue_pair(core, &QpairOptions { depth: 2 }).unwrap();
        let mut buf = AlignedBuf::new(4096);
        let r = io(&mut *qp, IoCmd::read(200, 1, buf.ptr(), 1));
        assert!(
            matches!(
                r,
                Err(IoError::Short {
                    expected: 4096,
                    got: 0
                })
            ),
            "{r:?}"
        );
    })
    .unwrap();
}

/// Mounts a small tmpfs, or says why not.
fn small_tmpfs(dir: &Path) -> bool {
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "flint-test",
            dir.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skip: cannot mount a tmpfs here (needs root); ENOSPC not exercised");
    }
    ok
}

#[test]
fn a_full_device_reports_enospc() {
    let dir = tempfile::tempdir().unwrap();
    if !small_tmpfs(dir.path()) {
        return;
    }
    let path = dir.path().join("sparse");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let mut spec = uring_spec(&path, "4MiB");
    spec.size = None;
    spec.direct = false;
    let dev = bdev::open(&spec).unwrap();
    let set = common::reactors(1);
    let result = set.call(0, move |core| {
        let mut qp = dev.queue_pair(core, &QpairOptions { depth: 2 }).unwrap();
        let mut buf = AlignedBuf::new(4096);
        let mut first_err = None;
        for lba in 0..1024 {
            if let Err(e) = io(&mut *qp, IoCmd::write(lba, 1, buf.ptr(), lba)) {
                first_err = Some((lba, e));
                break;
            }
        }
        // Data written before the device filled is still there.
        let _ = io(&mut *qp, IoCmd::read(0, 1, buf.ptr(), 0));
        first_err
    });
    let _ = std::process::Command::new("umount")
        .arg(dir.path())
        .status();
    let (lba, err) = result.unwrap().expect("a 1 MiB tmpfs must fill up");
    assert!(lba > 0 && lba < 1024);
    assert_eq!(
        err,
        IoError::Device {
            errno: libc::ENOSPC
        }
    );
}

#[test]
fn config_mistakes_are_clear_errors() {
    let bad: Result<DeviceSpec, _> =
        toml::from_str("name = \"a\"\nbackend = \"uring\"\npath = \"/x\"\nsqpol = true");
    assert!(bad.unwrap_err().to_string().contains("sqpol"));
    let bad: Result<DeviceSpec, _> = toml::from_str("name = \"a\"\nbackend = \"floppy\"");
    assert!(bad.unwrap_err().to_string().contains("floppy"));
    let ok: DeviceSpec =
        toml::from_str("name = \"a\"\nbackend = \"memory\"\nsize = \"64MiB\"").unwrap();
    assert_eq!(ok.size, Some(ByteSize(64 << 20)));

    let err = bdev::open(&DeviceSpec::new("m", Backend::Memory))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "device.m.size"),
        "{err}"
    );
    let mut s = mem_spec(Backend::Memory);
    s.block_size = Some(3000);
    let err = bdev::open(&s).err().unwrap().to_string();
    assert!(
        err.contains("block_size") && err.contains("power of two"),
        "{err}"
    );
    let mut s = mem_spec(Backend::Memory);
    s.size = Some(ByteSize(100));
    assert!(matches!(bdev::open(&s), Err(Error::Geometry { .. })));
    let mut s = uring_spec(Path::new("/nonexistent-dir/flint/d0"), "1MiB");
    let err = bdev::open(&s).err().unwrap().to_string();
    assert!(err.contains("/nonexistent-dir/flint/d0"), "{err}");
    s.size = None;
    s.path = Some("/var/tmp/flint-no-such-device".into());
    let err = bdev::open(&s).err().unwrap().to_string();
    assert!(err.contains("give a size"), "{err}");
    s.path = None;
    let err = bdev::open(&s).err().unwrap().to_string();
    assert!(err.contains("path"), "{err}");
}

#[cfg(feature = "fault-injection")]
#[test]
fn injected_device_faults_reach_the_caller() {
    use flint_dataplane::bdev::fault::{Fault, FaultyDevice, Rule};
    use flint_dataplane::bdev::Opcode;
    let dir = tempfile::tempdir().unwrap();
    let inner = bdev::open(&uring_spec(&dir.path().join("d"), "1MiB")).unwrap();
    let (dev, plan) = FaultyDevice::wrap(inner);
    plan.add(Rule {
        op: Some(Opcode::Read),
        lbas: 10..20,
        fault: Fault::Errno(libc::EIO),
    });
    plan.add(Rule {
        op: Some(Opcode::Write),
        lbas: 30..31,
        fault: Fault::Short(512),
    });
    let set = common::reactors(1);
    set.call(0, move |core| {
        let mut qp = dev.queue_pair(core, &QpairOptions { depth: 4 }).unwrap();
        let mut buf = AlignedBuf::new(8192);
        assert_eq!(io(&mut *qp, IoCmd::read(9, 1, buf.ptr(), 1)), Ok(4096));
        assert_eq!(
            io(&mut *qp, IoCmd::read(9, 2, buf.ptr(), 2)),
            Err(IoError::Device { errno: libc::EIO })
        );
        assert_eq!(
            io(&mut *qp, IoCmd::write(30, 1, buf.ptr(), 3)),
            Err(IoError::Short {
                expected: 4096,
                got: 512
            })
        );
        plan.fail_all();
        assert!(
            io(&mut *qp, IoCmd::flush(4)).is_err(),
            "a pulled drive fails flushes too"
        );
        plan.clear();
        assert_eq!(io(&mut *qp, IoCmd::read(12, 1, buf.ptr(), 5)), Ok(4096));
        assert_eq!(
            core.stats().snapshot(0).io_errors,
            0,
            "counting is the caller's job"
        );
    })
    .unwrap();
}
