//! The driver against the fake controller: bring-up, a random
//! write/read/verify workload over many queue wraps (in order and out of
//! order), statuses retried or surfaced, stalls that complete late, are
//! aborted, or need a reset (every command still completes), a fatal
//! controller and registers reading all ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::cmd::{nvm, Sqe, Status};
use super::ctrl::{Controller, NvmeError};
use super::dma::{DmaBuf, Identity};
use super::fake::{FakeMmio, FakeNvme};
use super::qpair::Done;
use std::sync::Arc;

const BLOCKS: u64 = 4096;

fn up(fake: &FakeNvme, queues: u16, entries: u16, timeout: Duration) -> Controller<FakeMmio> {
    let mut c = Controller::new(fake.mmio(), Arc::new(Identity), queues, entries, timeout).unwrap();
    let t0 = Instant::now();
    while !c.poll_start().unwrap() {
        assert!(t0.elapsed() < Duration::from_secs(10), "bring-up hung");
        std::thread::yield_now();
    }
    c
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Polls every queue (and the controller's health) until `want` commands
/// finished; returns them.
fn reap(c: &mut Controller<FakeMmio>, want: usize) -> Result<Vec<Done>, NvmeError> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < want {
        if c.check()? {
            while !c.poll_start()? {
                std::thread::yield_now();
            }
        }
        c.reap_all(&mut out);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "commands never completed"
        );
        std::thread::yield_now();
    }
    Ok(out)
}

/// Random writes and reads, `inflight` per queue at most, verified
/// against a model; `ops` commands in all.
fn workload(c: &mut Controller<FakeMmio>, fake: &FakeNvme, ops: usize, seed: u64) {
    let bs = c.info().block_size as usize;
    let max_blocks = (c.info().max_transfer / bs) as u64;
    let mut model = fake.disk(0, BLOCKS as usize * bs);
    let mut rng = Rng(seed);
    let mut done_ops = 0;
    let mut tag = 0u64;
    while done_ops < ops {
        // A batch: non-overlapping writes, then reads of what they wrote.
        let mut bufs: HashMap<u64, (DmaBuf, u64, u64, bool)> = HashMap::new();
        let mut taken: Vec<(u64, u64)> = Vec::new();
        let nq = c.queues().len();
        let room = nq * c.queues()[0].depth();
        for i in 0..12.min(room) {
            let blocks = 1 + rng.next() % max_blocks;
            let lba = rng.next() % (BLOCKS - blocks);
            if taken.iter().any(|&(l, n)| lba < l + n && l < lba + blocks) {
                continue;
            }
            taken.push((lba, blocks));
            let len = (blocks as usize) * bs;
            let buf = DmaBuf::new(len);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            buf.write(0, &data);
            tag += 1;
            let q = &mut c.queues()[i % nq];
            let sqe = Sqe::rw(nvm::WRITE, 1, lba, blocks as u32);
            q.submit(sqe, buf.iova(), len, tag)
                .expect("room in the queue");
            bufs.insert(tag, (buf, lba, blocks, true));
        }
        c.ring_all();
        let n = bufs.len();
        for d in reap(c, n).unwrap() {
            assert_eq!(d.result, Ok(0), "write failed");
            let (buf, lba, blocks, _) = &bufs[&d.tag];
            let at = *lba as usize * bs;
            let len = *blocks as usize * bs;
            buf.read(0, &mut model[at..at + len]);
        }
        done_ops += n;
        let mut reads: HashMap<u64, (DmaBuf, u64, u64)> = HashMap::new();
        for (i, &(lba, blocks)) in taken.iter().enumerate() {
            let len = blocks as usize * bs;
            let buf = DmaBuf::new(len);
            tag += 1;
            let q = &mut c.queues()[i % nq];
            q.submit(
                Sqe::rw(nvm::READ, 1, lba, blocks as u32),
                buf.iova(),
                len,
                tag,
            )
            .expect("room");
            reads.insert(tag, (buf, lba, blocks));
        }
        c.ring_all();
        for d in reap(c, reads.len()).unwrap() {
            assert_eq!(d.result, Ok(0), "read failed");
            let (buf, lba, blocks) = &reads[&d.tag];
            let at = *lba as usize * bs;
            let len = *blocks as usize * bs;
            let mut got = vec![0u8; len];
            buf.read(0, &mut got);
            assert!(got == model[at..at + len], "read back differs at lba {lba}");
        }
        done_ops += reads.len();
    }
    assert_eq!(
        fake.disk(0, model.len()),
        model,
        "the disk holds what was written"
    );
}

#[test]
fn bring_up_reports_the_namespace() {
    let fake = FakeNvme::start(BLOCKS, 12);
    let c = up(&fake, 2, 16, Duration::from_secs(1));
    let i = c.info();
    assert_eq!((i.block_size, i.blocks), (4096, BLOCKS));
    assert_eq!(i.max_transfer, 128 << 10);
    assert_eq!(i.io_queues, 2);
    assert!(i.write_zeroes && i.write_cache);
    assert_eq!(i.serial, "FAKE0001");
}

#[test]
fn random_io_verifies_over_many_queue_wraps() {
    let fake = FakeNvme::start(BLOCKS, 12);
    // 16 entries: 600 commands wrap each queue's rings about 19 times.
    let mut c = up(&fake, 2, 16, Duration::from_secs(2));
    workload(&mut c, &fake, 600, 1);
    assert!(fake.commands() >= 600);
}

#[test]
fn out_of_order_completions() {
    let fake = FakeNvme::start(BLOCKS, 9);
    fake.faults(|f| f.reorder = true);
    let mut c = up(&fake, 1, 8, Duration::from_secs(2));
    workload(&mut c, &fake, 300, 2);
}

fn one(c: &mut Controller<FakeMmio>, op: u8, lba: u64, tag: u64) -> Done {
    let bs = c.info().block_size as usize;
    let buf = DmaBuf::new(bs);
    let q = &mut c.queues()[0];
    q.submit(Sqe::rw(op, 1, lba, 1), buf.iova(), bs, tag)
        .unwrap();
    c.ring_all();
    let d = reap(c, 1).unwrap().remove(0);
    drop(buf);
    d
}

#[test]
fn statuses_are_retried_without_dnr_and_surfaced_with_it() {
    let fake = FakeNvme::start(BLOCKS, 12);
    let mut c = up(&fake, 1, 8, Duration::from_secs(2));
    let fault = Status {
        sct: 2,
        sc: 0x80,
        dnr: false,
    };
    fake.faults(|f| f.fail.push((nvm::WRITE, fault, 2)));
    assert_eq!(
        one(&mut c, nvm::WRITE, 5, 1).result,
        Ok(0),
        "retried twice, then done"
    );
    let fatal = Status {
        sct: 2,
        sc: 0x81,
        dnr: true,
    };
    fake.faults(|f| f.fail.push((nvm::READ, fatal, 1)));
    assert_eq!(
        one(&mut c, nvm::READ, 5, 2).result,
        Err(fatal),
        "an EIO-like status surfaces"
    );
    // Past the retry budget: surfaced too.
    fake.faults(|f| f.fail.push((nvm::WRITE, fault, 10)));
    assert_eq!(one(&mut c, nvm::WRITE, 5, 3).result, Err(fault));
    fake.faults(|f| f.fail.clear());
    // Out of range is the controller's to refuse.
    assert_eq!(
        one(&mut c, nvm::READ, BLOCKS, 4).result.unwrap_err().sc,
        0x80
    );
}

#[test]
fn a_short_stall_completes_late_a_long_one_is_aborted_and_retried() {
    let fake = FakeNvme::start(BLOCKS, 12);
    let mut c = up(&fake, 1, 8, Duration::from_millis(300));
    fake.faults(|f| f.stall = Some((nvm::READ, Duration::from_millis(100))));
    let t0 = Instant::now();
    assert_eq!(one(&mut c, nvm::READ, 1, 1).result, Ok(0));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert_eq!(c.aborts, 0);
    fake.faults(|f| f.stall = Some((nvm::READ, Duration::from_secs(30))));
    assert_eq!(
        one(&mut c, nvm::READ, 1, 2).result,
        Ok(0),
        "aborted, then retried"
    );
    assert_eq!((c.aborts, c.resets), (1, 0));
}

#[test]
fn a_stall_abort_cannot_clear_resets_and_every_command_completes() {
    let fake = FakeNvme::start(BLOCKS, 12);
    let mut c = up(&fake, 2, 8, Duration::from_millis(200));
    fake.faults(|f| {
        f.stall = Some((nvm::WRITE, Duration::from_secs(30)));
        f.ignore_abort = true;
    });
    // Seven commands in flight on queue 1 (one stalled), three on queue 2.
    let bs = 4096;
    let bufs: Vec<DmaBuf> = (0..10).map(|_| DmaBuf::new(bs)).collect();
    for (i, b) in bufs.iter().enumerate() {
        b.write(0, &[i as u8 + 1; 4096]);
        let q = &mut c.queues()[usize::from(i >= 7)];
        q.submit(Sqe::rw(nvm::WRITE, 1, i as u64, 1), b.iova(), bs, i as u64)
            .unwrap();
    }
    c.ring_all();
    let done = reap(&mut c, 10).unwrap();
    assert!(done.iter().all(|d| d.result == Ok(0)), "{done:?}");
    let mut tags: Vec<u64> = done.iter().map(|d| d.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..10).collect::<Vec<_>>(), "every command once");
    assert_eq!(c.resets, 1);
    for i in 0..10 {
        assert!(fake.disk(i * bs, bs) == vec![i as u8 + 1; bs], "block {i}");
    }
    // I/O goes on after the reset.
    fake.faults(|f| f.ignore_abort = false);
    workload(&mut c, &fake, 60, 3);
}

#[test]
fn a_fatal_controller_and_vanished_registers_are_errors() {
    let fake = FakeNvme::start(BLOCKS, 12);
    let mut c = up(&fake, 1, 8, Duration::from_millis(500));
    fake.faults(|f| f.fatal_after = Some(3));
    for i in 0..3 {
        assert_eq!(one(&mut c, nvm::WRITE, i, i).result, Ok(0));
    }
    let bs = 4096;
    let buf = DmaBuf::new(bs);
    c.queues()[0]
        .submit(Sqe::rw(nvm::WRITE, 1, 9, 1), buf.iova(), bs, 9)
        .unwrap();
    c.ring_all();
    assert_eq!(reap(&mut c, 1).unwrap_err(), NvmeError::Fatal);

    let fake = FakeNvme::start(BLOCKS, 12);
    let mut c = up(&fake, 1, 8, Duration::from_millis(500));
    fake.set_gone(true);
    assert_eq!(c.check().unwrap_err(), NvmeError::Gone);
    assert_eq!(
        Controller::new(
            fake.mmio(),
            Arc::new(Identity),
            1,
            8,
            Duration::from_secs(1)
        )
        .err(),
        Some(NvmeError::Gone)
    );
}
