//! Helpers for the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::store::StoreConfig;

/// Small geometry so tests fill devices and wrap journals quickly.
pub fn small_config() -> StoreConfig {
    StoreConfig {
        chunk_size: 64 << 10,
        journal_blocks: 256,
        checkpoint_blocks: 512,
        shards: 1,
    }
}

/// One adaptive reactor, unpinned (tests share two CPUs).
pub fn engine() -> Engine {
    let cfg = ReactorConfig {
        cores: vec![flint_dataplane::placement::allowed_cores().unwrap()[0]],
        pin: false,
        ..ReactorConfig::default()
    };
    Engine::start(&cfg).unwrap()
}

/// Two adaptive reactors, unpinned, on the first two CPUs (both on one
/// when there is one): shards on different reactors.
pub fn two_reactors() -> Engine {
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

/// `n` RAM devices of `mib` MiB.
pub fn memory_devices(n: usize, mib: u64) -> Vec<Arc<dyn BlockDevice>> {
    (0..n)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("ram{i}"), Backend::Memory);
            s.size = Some(ByteSize(mib << 20));
            bdev::open(&s).unwrap()
        })
        .collect()
}

/// `n` file-backed io_uring devices of `mib` MiB under `dir`.
pub fn file_devices(dir: &Path, n: usize, mib: u64) -> Vec<Arc<dyn BlockDevice>> {
    (0..n)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("file{i}"), Backend::Uring);
            s.path = Some(dir.join(format!("dev{i}.img")));
            s.size = Some(ByteSize(mib << 20));
            bdev::open(&s).unwrap()
        })
        .collect()
}

/// A freshly formatted and opened engine on `devs` with one file system
/// "data" of protection k+m.
pub fn fresh(devs: &[Arc<dyn BlockDevice>], k: u8, m: u8, reduction: bool) -> (Engine, u32) {
    let mut e = engine();
    e.format(devs.to_vec(), small_config(), false).unwrap();
    e.open(present(devs)).unwrap();
    let fs = e
        .call(move |s| s.fs_create("data", k, m, reduction, 1 << 30))
        .unwrap();
    (e, fs)
}

/// All devices present.
pub fn present(devs: &[Arc<dyn BlockDevice>]) -> Vec<Option<Arc<dyn BlockDevice>>> {
    devs.iter().cloned().map(Some).collect()
}

/// A small deterministic RNG.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Bytes that are text-like (compressible), random, or a repeated
    /// pattern (deduplicable), by turns.
    pub fn data(&mut self, len: usize) -> Vec<u8> {
        let kind = self.below(3);
        let seed = self.below(4);
        (0..len)
            .map(|i| match kind {
                0 => b"flint stripes and parity "[i % 25],
                1 => self.next() as u8,
                _ => (i as u64 / 512 + seed) as u8,
            })
            .collect()
    }
}

/// Runs this test binary's test `name` as a child process with `env` set,
/// SIGKILLs it `after` it printed its first acknowledgement ("ACK" or
/// "SYNCED" in a line; or
/// after 60 s without one: a loaded machine must not turn into rounds that
/// test nothing), and returns every line it printed.
pub fn run_and_kill(name: &str, env: &[(&str, String)], after: std::time::Duration) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("ACK") || line.contains("SYNCED") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// A node for protocol tests: an engine on every CPU (unpinned) over three
/// 64 MiB RAM devices, with organization `org` owning file system `data`
/// (2+1, reduction on). Returns the engine and the organization's key.
pub fn org_node(org: &str) -> (Engine, [u8; 32]) {
    let devs = memory_devices(3, 64);
    let mut e = Engine::start(&ReactorConfig {
        cores: vec![],
        pin: false,
        ..ReactorConfig::default()
    })
    .unwrap();
    e.format(devs.clone(), StoreConfig::default(), false)
        .unwrap();
    e.open(present(&devs)).unwrap();
    let o = e.org_create(org).unwrap();
    let fs = e.fs_create("data", 2, 1, true, 1 << 30).unwrap();
    e.fs_set_owner(fs, o.id).unwrap();
    (e, o.key)
}
