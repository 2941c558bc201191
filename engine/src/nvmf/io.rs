//! Running a queue's jobs on the engine: a read within one range of the
//! volume's file travels through the reactors by itself
//! ([`Engine::read_async`]); everything else — writes, which the engine
//! answers once durable, flushes, zeroing — runs on the target's worker
//! threads, as the data protocol's server does. Engine errors become NVMe
//! statuses a host acts on.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::queue::{Done, Io, Job};
use super::spec::Status;
use crate::control::RANGE_BYTES;
use crate::engine::Engine;
use crate::store::StoreError;

/// Zeroing writes at most this many bytes at a time.
const ZERO_PIECE: u64 = 1 << 20;

/// The NVMe status for an engine error.
pub fn status_of(e: &StoreError) -> Status {
    match e {
        StoreError::NoSpace { .. } | StoreError::Quota { .. } => Status::CAPACITY,
        StoreError::ReadOnly { .. } => Status::WRITE_PROTECTED,
        StoreError::Unrecoverable { .. } => Status::READ_ERROR,
        StoreError::Io { .. } => Status::WRITE_FAULT,
        StoreError::Stopping | StoreError::Moved { .. } => Status::NOT_READY,
        StoreError::Invalid { .. } | StoreError::TooLarge { .. } => Status::INVALID_FIELD,
        _ => Status::INTERNAL,
    }
}

fn done(cid: u16, r: crate::store::Result<Vec<u8>>) -> Done {
    Done {
        cid,
        result: r.map_err(|e| {
            tracing::warn!(error = %e, "NVMe/TCP command failed");
            status_of(&e)
        }),
    }
}

/// Runs `job` on the calling thread (a worker), blocking until the engine
/// answers.
pub fn run(engine: &Engine, job: Job) -> Done {
    let ino = job.ino;
    let r = match job.io {
        Io::Read { offset, len } => engine.read(ino, offset, len),
        Io::Write { offset, data } => engine.write(ino, offset, data).map(|_| Vec::new()),
        Io::Flush => engine.fsync(ino).map(|_| Vec::new()),
        Io::FlushAll => engine.commit_all().map(|_| Vec::new()),
        Io::Zero { ranges } => zero(engine, ino, &ranges).map(|_| Vec::new()),
    };
    done(job.cid, r)
}

fn zero(engine: &Engine, ino: crate::meta::Ino, ranges: &[(u64, u64)]) -> crate::store::Result<()> {
    for &(offset, len) in ranges {
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(ZERO_PIECE);
            engine.write(ino, at, vec![0; n as usize])?;
            at += n;
        }
    }
    Ok(())
}

type Task = Box<dyn FnOnce() + Send>;

/// The worker threads that run blocking jobs.
pub struct Workers {
    tx: Mutex<Option<mpsc::Sender<Task>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` workers.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nvmf-worker-{i}"))
                    .spawn(move || loop {
                        let task = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match task {
                            Ok(t) => t(),
                            Err(_) => return,
                        }
                    })?,
            );
        }
        Ok(Workers {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Starts `job`; `finished` gets its [`Done`] on whichever thread ends
    /// it (a reactor or a worker).
    pub fn submit(
        &self,
        engine: &Arc<Engine>,
        job: Job,
        finished: impl FnOnce(Done) + Send + 'static,
    ) {
        if let Io::Read { offset, len } = job.io {
            let last = offset + len.max(1) as u64 - 1;
            if len > 0 && offset / RANGE_BYTES == last / RANGE_BYTES {
                let cid = job.cid;
                engine.read_async(job.ino, offset, len, move |r| finished(done(cid, r)));
                return;
            }
        }
        let e = engine.clone();
        let task: Task = Box::new(move || finished(run(&e, job)));
        if let Ok(g) = self.tx.lock() {
            if let Some(tx) = g.as_ref() {
                // A send fails only once stopping: the connection is then
                // closing and the host retries the command on its next.
                let _ = tx.send(task);
            }
        }
    }

    /// Stops the workers once the jobs queued so far are done.
    pub fn stop(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Ok(mut t) = self.threads.lock() {
            for h in t.drain(..) {
                let _ = h.join();
            }
        }
    }
}
