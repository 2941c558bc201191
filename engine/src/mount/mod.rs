//! `flint mount`: the POSIX client. A FUSE file system ([`fs`]) over the
//! data protocol ([`lanes`]), so training jobs run on a Flint file system
//! unchanged.
//!
//! ```text
//! flint mount HOST:PORT/FS MOUNTPOINT [-f] [-o OPTION[,OPTION...]]
//! flint umount MOUNTPOINT
//! ```
//!
//! Options (fstab style, comma-separated; see [`OPTIONS`]): `org=`,
//! `key_file=`, `ro`, `attr_timeout=`, `entry_timeout=`, `timeout=`,
//! `threads=`, `log=`, the kernel's `noatime`/`nodev`/`nosuid`/`noexec`/
//! `sync`/`dirsync`, `allow_other`; fstab's `defaults`, `_netdev`, `auto`,
//! `noauto`, `nofail`, `user` are accepted and mean nothing here. An
//! unknown option is refused by name.
//!
//! Without `-f` the mount runs as a daemon: the command returns once the
//! file system is mounted (or prints why it could not be). SIGTERM, SIGINT
//! and SIGHUP unmount cleanly.

pub mod fs;
pub mod lanes;
mod snapshots;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};

use crate::net::auth;
use crate::net::client::ClientConfig;
use crate::net::ns::{NsAttr, NsCall};

/// The options `-o` takes, with what each means.
pub const OPTIONS: &[(&str, &str)] = &[
    (
        "org=NAME",
        "organization (default: the config's first [[org]])",
    ),
    (
        "key_file=PATH",
        "the organization's key (default: the config's)",
    ),
    ("ro", "read-only"),
    (
        "writeback_cache",
        "the kernel keeps written pages and sends them in parallel; durable at fsync/close",
    ),
    (
        "attr_timeout=SECS",
        "how long the kernel keeps attributes (1)",
    ),
    ("entry_timeout=SECS", "how long the kernel keeps names (1)"),
    (
        "timeout=SECS",
        "a call the appliance does not answer fails with ETIMEDOUT after this (120)",
    ),
    (
        "threads=N",
        "FUSE session threads, each with its own fd (8)",
    ),
    (
        "log=PATH",
        "the daemon's log (default /tmp/flint-mount-<fs>.log)",
    ),
    (
        "allow_other",
        "other users may use the mount (on when root)",
    ),
    (
        "noatime,nodev,nosuid,noexec,sync,dirsync",
        "kernel mount flags",
    ),
];

/// A parsed `flint mount` command.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The appliance's data address.
    pub addr: SocketAddr,
    /// The file system's name.
    pub fs: String,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Organization.
    pub org: Option<String>,
    /// Its key file.
    pub key_file: Option<PathBuf>,
    /// Read-only.
    pub read_only: bool,
    /// FUSE's write-back cache.
    pub writeback_cache: bool,
    /// Kernel cache lifetimes.
    pub ttl: fs::Timeouts,
    /// How long a call waits for an absent appliance.
    pub timeout: Duration,
    /// Session threads.
    pub threads: usize,
    /// Readahead in KiB (the mount's `read_ahead_kb`).
    pub readahead_kb: u32,
    /// Other users may use it.
    pub allow_other: bool,
    /// Stay in the foreground.
    pub foreground: bool,
    /// The daemon's log.
    pub log: Option<PathBuf>,
    /// Kernel flags.
    pub flags: Vec<MountOption>,
}

fn secs(key: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("-o {key}={v}: not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("-o {key}={v}: give 0 to 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl MountOptions {
    /// Parses `HOST:PORT/FS`, the mount point and the `-o` option lists.
    pub fn parse(
        spec: &str,
        mountpoint: &str,
        opts: &[String],
        foreground: bool,
    ) -> Result<MountOptions, String> {
        let (addr, fs) = spec
            .rsplit_once('/')
            .filter(|(_, f)| !f.is_empty())
            .ok_or_else(|| format!("`{spec}`: give the file system as HOST:PORT/FS"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| {
            format!("`{addr}`: not an address like 127.0.0.1:7400 (the appliance's data_addr)")
        })?;
        let mut o = MountOptions {
            addr,
            fs: fs.to_string(),
            mountpoint: PathBuf::from(mountpoint),
            org: None,
            key_file: None,
            read_only: false,
            writeback_cache: false,
            ttl: fs::Timeouts {
                attr: Duration::from_secs(1),
                entry: Duration::from_secs(1),
            },
            timeout: Duration::from_secs(120),
            threads: 8,
            readahead_kb: 8192,
            // SAFETY: geteuid has no preconditions and cannot fail.
            allow_other: unsafe { libc::geteuid() } == 0,
            foreground,
            log: None,
            flags: Vec::new(),
        };
        for opt in opts
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
        {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match (k, v) {
                ("org", v) if !v.is_empty() => o.org = Some(v.to_string()),
                ("key_file" | "key", v) if !v.is_empty() => o.key_file = Some(v.into()),
                ("ro", "") => o.read_only = true,
                ("rw", "") => o.read_only = false,
                ("writeback_cache", "") => o.writeback_cache = true,
                ("attr_timeout", v) => o.ttl.attr = secs(k, v)?,
                ("entry_timeout", v) => o.ttl.entry = secs(k, v)?,
                ("timeout", v) => o.timeout = secs(k, v)?.max(Duration::from_secs(1)),
                ("threads", v) => {
                    o.threads = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| format!("-o threads={v}: give 1 to 256"))?
                }
                ("readahead_kb", v) => {
                    o.readahead_kb = v
                        .parse()
                        .ok()
                        .filter(|n| (4..=1 << 20).contains(n))
                        .ok_or_else(|| format!("-o readahead_kb={v}: give 4 to 1048576"))?
                }
                ("log", v) if !v.is_empty() => o.log = Some(v.into()),
                ("allow_other", "") => o.allow_other = true,
                ("noallow_other", "") => o.allow_other = false,
                ("noatime", "") => o.flags.push(MountOption::NoAtime),
                ("atime", "") => o.flags.push(MountOption::Atime),
                ("nodev", "") => o.flags.push(MountOption::NoDev),
                ("dev", "") => o.flags.push(MountOption::Dev),
                ("nosuid", "") => o.flags.push(MountOption::NoSuid),
                ("suid", "") => o.flags.push(MountOption::Suid),
                ("noexec", "") => o.flags.push(MountOption::NoExec),
                ("exec", "") => o.flags.push(MountOption::Exec),
                ("sync", "") => o.flags.push(MountOption::Sync),
                ("dirsync", "") => o.flags.push(MountOption::DirSync),
                ("defaults" | "_netdev" | "auto" | "noauto" | "nofail" | "user" | "users", "") => {}
                _ => {
                    let known: Vec<&str> = OPTIONS.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "-o {opt}: not a mount option (options: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// Reads an organization's key file.
fn read_key(path: &Path) -> Result<auth::Key, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    auth::key_from_hex(&text)
        .ok_or_else(|| format!("{} does not hold a 64-hex-digit key", path.display()))
}

/// Mounts and serves until unmounted (the foreground mount).
pub fn run(o: &MountOptions) -> Result<(), String> {
    let org = o
        .org
        .clone()
        .ok_or("no organization: pass -o org=NAME (or --config)")?;
    let key_file = o
        .key_file
        .clone()
        .ok_or("no key: pass -o key_file=PATH (or --config)")?;
    let key = read_key(&key_file)?;
    if !o.mountpoint.is_dir() {
        return Err(format!(
            "mount point {} is not a directory",
            o.mountpoint.display()
        ));
    }
    let cfg = ClientConfig {
        timeout: o.timeout,
        ..ClientConfig::default()
    };
    let lanes = lanes::Lanes::connect(o.addr, &org, &key, cfg, &o.fs)
        .map_err(|e| format!("cannot reach the appliance at {}: {e}", o.addr))?;
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let root = lanes
        .ns(uid, gid, NsCall::Root)
        .map_err(|code| {
            format!(
                "file system `{}`: {} (does it exist, and is it {org}'s?)",
                o.fs,
                std::io::Error::from_raw_os_error(-code)
            )
        })
        .and_then(|b| NsAttr::from_body(&b).map_err(|e| e.to_string()))?;
    let notifier = Arc::new(OnceLock::new());
    let filesystem = fs::FlintFs::new(
        Arc::new(lanes),
        root.ino,
        o.ttl,
        o.read_only,
        notifier.clone(),
    )
    .with_writeback_cache(o.writeback_cache);
    filesystem.sweep_orphans();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("flint:{}/{}", o.addr, o.fs)),
        MountOption::Subtype("flint".into()),
        MountOption::DefaultPermissions,
        if o.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.mount_options.extend(o.flags.iter().cloned());
    config.acl = if o.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(o.threads);
    config.clone_fd = o.threads > 1;
    let signals = block_signals();
    let mut session = fuser::Session::new(filesystem, &o.mountpoint, &config)
        .map_err(|e| format!("cannot mount on {}: {e}", o.mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    set_readahead(&o.mountpoint, o.readahead_kb);
    let mut unmounter = session.unmount_callable();
    let mp = o.mountpoint.clone();
    std::thread::Builder::new()
        .name("flint-mount-signals".into())
        .spawn(move || {
            let sig = wait_signal(&signals);
            tracing::info!("mount: signal {sig}: unmounting {}", mp.display());
            if let Err(e) = unmounter.unmount() {
                tracing::warn!("mount: unmounting {}: {e}", mp.display());
            }
        })
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "mount: {}/{} on {} ({} session threads, attr {:?}, entry {:?}, timeout {:?})",
        o.addr,
        o.fs,
        o.mountpoint.display(),
        o.threads,
        o.ttl.attr,
        o.ttl.entry,
        o.timeout
    );
    session
        .run()
        .map_err(|e| format!("the FUSE session ended: {e}"))?;
    tracing::info!("mount: {} unmounted", o.mountpoint.display());
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and those it starts
/// (the FUSE session threads), so one thread waits for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is a valid signal set and `sig` a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// The `major:minor` device of the mount at `path` (from mountinfo, so
/// nothing asks the file system itself).
fn device_of(path: &Path) -> Option<String> {
    let canon = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4).map(Path::new) == Some(canon.as_path())).then(|| f[2].to_string())
    })
}

/// Sets the mount's readahead: the kernel offers FUSE only 128 KiB at
/// first, one 128 KiB request in flight for a sequential reader; the
/// device's `read_ahead_kb` raises it.
fn set_readahead(path: &Path, kb: u32) {
    let Some(dev) = device_of(path) else {
        tracing::warn!("mount: cannot find {} in mountinfo", path.display());
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => tracing::info!("mount: readahead {kb} KiB ({knob})"),
        Err(e) => tracing::warn!("mount: cannot set readahead in {knob}: {e} (128 KiB stays)"),
    }
}

/// Whether `path` is a mount point of a Flint FUSE mount now.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        let after = |n: usize| sep.and_then(|i| f.get(i + n)).copied().unwrap_or("");
        f.get(4).is_some_and(|m| Path::new(m) == canon)
            && after(1).starts_with("fuse")
            && after(2).starts_with("flint:")
    })
}

/// Starts the mount as a daemon (this program again, with `-f`, in its own
/// session, its output in the log) and waits until it is mounted.
pub fn daemonize(o: &MountOptions, argv: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let log = o
        .log
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/flint-mount-{}.log", o.fs)));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("cannot open the log {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(argv)
        .arg("-f")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe, as the child side of fork needs.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the mount daemon: {e}"))?;
    let until = Instant::now() + o.timeout.max(Duration::from_secs(10));
    while Instant::now() < until {
        if is_mounted(&o.mountpoint) {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().last().unwrap_or("").to_string();
            return Err(format!(
                "the mount daemon exited ({st}): {last} (log: {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    Err(format!(
        "{} was not mounted in time (log: {})",
        o.mountpoint.display(),
        log.display()
    ))
}

/// Unmounts a Flint mount (the daemon then exits).
pub fn umount(path: &Path, lazy: bool) -> Result<(), String> {
    if !is_mounted(path) {
        return Err(format!("{} is not a Flint mount", path.display()));
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => format!(
                "{} is busy (files are open there); close them, or `flint umount -l` to detach it now",
                path.display()
            ),
            Some(libc::EPERM) => format!("{}: only root may unmount it here", path.display()),
            _ => format!("cannot unmount {}: {e}", path.display()),
        });
    }
    Ok(())
}
