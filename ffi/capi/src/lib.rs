//! # libflint — Flint's C ABI
//!
//! An embedded engine behind opaque handles, declared in the checked-in
//! `include/flint.h` and exported by the explicit list in `flint.map`.
//! Every function returns 0 (or a byte count) or a negated errno; none
//! unwinds into C (panics become `-EIO`); every pointer is checked.
//!
//! Asynchronous operations travel on a pair of single-producer rings: the
//! caller's thread pushes operations, a poller on the engine's reactor
//! ([`Engine::shard_poller`]) runs them against the store and pushes
//! completions back, and `flint_poll` drains those without blocking or
//! allocating.
//!
//! The same handle can instead be a client of a running appliance
//! (`flint_connect`): the same calls then travel over the data protocol
//! ([`flint_engine::net::client`]), many in flight at once.

#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::park::Waker;
use flint_dataplane::reactor::ReactorConfig;
use flint_dataplane::ring::{ring, Consumer, Producer};
use flint_engine::engine::Engine;
use flint_engine::net::client::{Client, ClientConfig, ClientError};
use flint_engine::net::wire::Request;
use flint_engine::store::{StoreConfig, StoreError};

/// Most operations in flight per engine before `flint_submit` says -EAGAIN.
mod names;
mod snapshots;

const MAX_IN_FLIGHT: usize = 4096;

/// `struct flint_engine_opts` (flint.h).
#[repr(C)]
pub struct FlintEngineOpts {
    size: usize,
    device_paths: *const *const c_char,
    device_count: u32,
    device_bytes: u64,
    format: c_int,
    force: c_int,
}

/// `struct flint_io` (flint.h).
#[repr(C)]
pub struct FlintIo {
    size: usize,
    op: c_int,
    ino: u64,
    offset: u64,
    buf: *mut c_void,
    len: usize,
    cb_arg: *mut c_void,
}

/// `struct flint_completion` (flint.h).
#[repr(C)]
pub struct FlintCompletion {
    cb_arg: *mut c_void,
    result: i64,
}

/// `enum flint_op` (flint.h): what a `struct flint_io` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum IoOp {
    /// `FLINT_OP_READ`.
    Read = 0,
    /// `FLINT_OP_WRITE`.
    Write = 1,
    /// `FLINT_OP_FSYNC`.
    Fsync = 2,
}

impl IoOp {
    /// The operation a caller's code names, if any.
    fn from_c(code: c_int) -> Option<IoOp> {
        [IoOp::Read, IoOp::Write, IoOp::Fsync]
            .into_iter()
            .find(|op| *op as c_int == code)
    }
}

/// One queued operation, as it travels to the reactor.
struct Op {
    op: IoOp,
    ino: u64,
    offset: u64,
    buf: CBuf,
    cb_arg: usize,
}

/// One finished operation, as it travels back.
struct Done {
    cb_arg: usize,
    result: i64,
}

/// `struct flint_connect_opts` (flint.h).
#[repr(C)]
pub struct FlintConnectOpts {
    size: usize,
    addr: *const c_char,
    org: *const c_char,
    key_hex: *const c_char,
    key_file: *const c_char,
}

/// The opaque `flint_engine`: an embedded engine, or a client of an
/// appliance.
pub enum FlintEngine {
    /// The engine in this process.
    Local(Box<Local>),
    /// A session with a running `flint serve`.
    Remote(Box<Remote>),
}

/// An embedded engine and its client rings.
pub struct Local {
    engine: Engine,
    claimed: Vec<String>,
    submit: Producer<Op>,
    done: Consumer<Done>,
    waker: Waker,
    in_flight: usize,
}

/// A remote session: file system names stand behind the ids handed out,
/// asynchronous reads remember where their data goes.
pub struct Remote {
    client: Client,
    fs_names: Vec<String>,
    pending: HashMap<u64, (Op, usize)>,
    next_tag: u64,
    ready: Vec<Done>,
}

/// A caller's buffer, carried to the reactor. The C contract (flint.h)
/// keeps it valid and untouched until the operation completes.
struct CBuf(*mut u8, usize);
// SAFETY: the pointer is only dereferenced on the reactor while the caller
// guarantees exclusive validity (see flint_submit in flint.h).
unsafe impl Send for CBuf {}

fn errno(e: &StoreError) -> i32 {
    e.errno()
}

/// Runs `f`, turning a panic into -EIO so nothing unwinds into C.
fn guard<T>(fail: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fail)
}

/// Stores a successful result through `out`; returns 0, or the negated
/// errno of the error (or of a NULL `out`).
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, r: Result<T, StoreError>) -> c_int {
    if out.is_null() {
        return -libc::EINVAL;
    }
    match r {
        Ok(v) => {
            // SAFETY: non-NULL and valid per the caller.
            unsafe { out.write(v) };
            0
        }
        Err(e) => errno(&e),
    }
}

/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn c_str<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per the caller.
    unsafe { CStr::from_ptr(s) }.to_str().ok()
}

/// Devices (paths and RAM names) of the engines open in this process: two
/// engines on one device would overwrite each other's stripes.
fn open_devices_in_use() -> &'static Mutex<Vec<String>> {
    static IN_USE: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    IN_USE.get_or_init(|| Mutex::new(Vec::new()))
}

/// Returns devices claimed by an engine that closed (or failed to open).
fn release_devices(paths: &[String]) {
    if let Ok(mut in_use) = open_devices_in_use().lock() {
        in_use.retain(|p| !paths.contains(p));
    }
}

/// RAM devices by name: they live as long as the process, so an engine
/// closed and opened again (fio's jobs, for one) finds its data.
fn ram_devices() -> &'static Mutex<HashMap<String, Arc<dyn BlockDevice>>> {
    static RAM: OnceLock<Mutex<HashMap<String, Arc<dyn BlockDevice>>>> = OnceLock::new();
    RAM.get_or_init(|| Mutex::new(HashMap::new()))
}

fn open_devices(paths: &[String], bytes: u64) -> Result<Vec<Arc<dyn BlockDevice>>, i32> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // "ram:NAME" is a RAM device of `bytes`; anything else a path.
            let mut spec = if let Some(name) = p.strip_prefix("ram:") {
                let mut ram = ram_devices().lock().map_err(|_| -libc::EIO)?;
                if let Some(d) = ram.get(name) {
                    return Ok(d.clone());
                }
                if bytes == 0 {
                    return Err(-libc::EINVAL);
                }
                let mut spec = DeviceSpec::new(&format!("ram-{name}"), Backend::Memory);
                spec.size = Some(ByteSize(bytes));
                let d = bdev::open(&spec).map_err(|_| -libc::ENOMEM)?;
                ram.insert(name.to_string(), d.clone());
                return Ok(d);
            } else {
                let mut s = DeviceSpec::new(&format!("dev{i}"), Backend::Uring);
                s.path = Some(p.into());
                s
            };
            spec.size = (bytes > 0).then_some(ByteSize(bytes));
            bdev::open(&spec).map_err(|e| match e {
                flint_dataplane::Error::DeviceOpen { source, .. } => {
                    -source.raw_os_error().unwrap_or(libc::EIO)
                }
                flint_dataplane::Error::Config { .. } | flint_dataplane::Error::Geometry { .. } => {
                    -libc::EINVAL
                }
                _ => -libc::EIO,
            })
        })
        .collect()
}

/// Opens an embedded engine; see flint.h.
///
/// # Safety
/// `opts` points to a `struct flint_engine_opts` whose `device_paths` holds
/// `device_count` NUL-terminated strings; `out` is a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn flint_engine_open(
    opts: *const FlintEngineOpts,
    out: *mut *mut FlintEngine,
) -> c_int {
    guard(-libc::EIO, || {
        if opts.is_null() || out.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: non-NULL; the caller passes a valid options struct.
        let o = unsafe { &*opts };
        if o.size < std::mem::size_of::<FlintEngineOpts>()
            || o.device_paths.is_null()
            || o.device_count == 0
        {
            return -libc::EINVAL;
        }
        let mut paths = Vec::new();
        for i in 0..o.device_count as usize {
            // SAFETY: device_paths holds device_count entries.
            let p = unsafe { *o.device_paths.add(i) };
            // SAFETY: each entry is NULL or NUL-terminated.
            match unsafe { c_str(p) } {
                Some(s) => paths.push(s.to_string()),
                None => return -libc::EINVAL,
            }
        }
        {
            let Ok(mut in_use) = open_devices_in_use().lock() else {
                return -libc::EIO;
            };
            if paths.iter().any(|p| in_use.contains(p)) {
                return -libc::EBUSY;
            }
            in_use.extend(paths.iter().cloned());
        }
        let opened = open_engine(o, &paths);
        match opened {
            Ok(handle) => {
                // SAFETY: `out` is valid per the caller.
                unsafe { *out = Box::into_raw(handle) };
                0
            }
            Err(e) => {
                release_devices(&paths);
                e
            }
        }
    })
}

/// Opens devices and the engine on them, with its client rings.
fn open_engine(o: &FlintEngineOpts, paths: &[String]) -> Result<Box<FlintEngine>, c_int> {
    let devs = open_devices(paths, o.device_bytes)?;
    let cpus = flint_dataplane::placement::allowed_cores().unwrap_or_default();
    let cfg = ReactorConfig {
        cores: cpus.last().map(|c| vec![*c]).unwrap_or_default(),
        pin: false,
        ..ReactorConfig::default()
    };
    let mut engine = Engine::start(&cfg).map_err(|e| errno(&e))?;
    if o.format != 0 {
        engine
            .format(devs.clone(), StoreConfig::default(), o.force != 0)
            .map_err(|e| errno(&e))?;
    }
    // Group commit and background garbage collection every 20 ms.
    let seal = Some(Duration::from_millis(20));
    engine
        .open_with(devs.into_iter().map(Some).collect(), seal)
        .map_err(|e| errno(&e))?;
    let (submit, mut ops) = ring::<Op>(MAX_IN_FLIGHT);
    let (mut done_tx, done) = ring::<Done>(MAX_IN_FLIGHT);
    let mut batch: Vec<Done> = Vec::with_capacity(64);
    let poller = move |s: &mut flint_engine::store::Store| {
        let n = ops.pop_batch(64, |op| {
            let result = run_op(s, &op);
            batch.push(Done {
                cb_arg: op.cb_arg,
                result,
            });
        });
        // Acknowledged means durable: the batch is committed once (group
        // commit) before any of it completes; a failed commit fails the
        // writes it held.
        if n > 0 && s.awaits_commit() {
            if let Err(e) = s.commit() {
                for d in batch.iter_mut().filter(|d| d.result >= 0) {
                    d.result = i64::from(errno(&e));
                }
            }
        }
        for d in batch.drain(..) {
            // The completion ring is as deep as the submission ring, so
            // there is always room.
            let _ = done_tx.push(d);
        }
        n > 0
    };
    let waker = engine.shard_poller(0, poller).map_err(|e| errno(&e))?;
    Ok(Box::new(FlintEngine::Local(Box::new(Local {
        engine,
        claimed: paths.to_vec(),
        submit,
        done,
        waker,
        in_flight: 0,
    }))))
}

/// Connects to an appliance; see flint.h.
///
/// # Safety
/// `opts` points to a `struct flint_connect_opts` of valid strings (or
/// NULLs where allowed); `out` is a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn flint_connect(
    opts: *const FlintConnectOpts,
    out: *mut *mut FlintEngine,
) -> c_int {
    guard(-libc::EIO, || {
        if opts.is_null() || out.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: non-NULL; the caller passes a valid options struct.
        let o = unsafe { &*opts };
        if o.size < std::mem::size_of::<FlintConnectOpts>() {
            return -libc::EINVAL;
        }
        // SAFETY: each string is NULL or NUL-terminated per the contract.
        let (addr, org, hex, file) = unsafe {
            (
                c_str(o.addr),
                c_str(o.org),
                c_str(o.key_hex),
                c_str(o.key_file),
            )
        };
        let (Some(addr), Some(org)) = (addr, org) else {
            return -libc::EINVAL;
        };
        let Ok(addr) = addr.parse() else {
            return -libc::EINVAL;
        };
        let text = match (hex, file) {
            (Some(h), _) => h.to_string(),
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) => return -e.raw_os_error().unwrap_or(libc::EIO),
            },
            (None, None) => return -libc::EINVAL,
        };
        let Some(key) = flint_engine::net::auth::key_from_hex(&text) else {
            return -libc::EINVAL;
        };
        match Client::connect(addr, org, &key, ClientConfig::default()) {
            Ok(client) => {
                let h = Box::new(FlintEngine::Remote(Box::new(Remote {
                    client,
                    fs_names: Vec::new(),
                    pending: HashMap::new(),
                    next_tag: 1,
                    ready: Vec::new(),
                })));
                // SAFETY: `out` is valid per the caller.
                unsafe { *out = Box::into_raw(h) };
                0
            }
            Err(e) => e.errno(),
        }
    })
}

fn cerr(e: &ClientError) -> i32 {
    e.errno()
}

/// Closes an engine; see flint.h.
///
/// # Safety
/// `eng` came from `flint_engine_open` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn flint_engine_close(eng: *mut FlintEngine) -> c_int {
    guard(-libc::EIO, || {
        if eng.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: the handle came from Box::into_raw in flint_engine_open.
        let h = unsafe { Box::from_raw(eng) };
        let mut h = match *h {
            FlintEngine::Local(l) => l,
            FlintEngine::Remote(mut r) => {
                // Let operations in flight finish before their buffers go.
                while !r.pending.is_empty() {
                    if remote_poll(&mut r, Duration::from_millis(100)).is_err() {
                        break;
                    }
                    r.ready.clear();
                }
                return 0;
            }
        };
        // Let queued operations finish before their buffers go away.
        while h.in_flight > 0 {
            let n = h.done.pop_batch(64, drop);
            h.in_flight -= n;
            if n == 0 {
                std::thread::yield_now();
            }
        }
        let claimed = std::mem::take(&mut h.claimed);
        let r = match h.engine.close() {
            Ok(()) => 0,
            Err(e) => errno(&e),
        };
        release_devices(&claimed);
        r
    })
}

/// # Safety
/// `eng` is NULL or a live handle.
unsafe fn handle<'a>(eng: *mut FlintEngine) -> Option<&'a mut FlintEngine> {
    // SAFETY: a live handle from flint_engine_open, used by one thread at a
    // time per the C contract.
    unsafe { eng.as_mut() }
}

/// Creates a file system; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `name` a NUL-terminated string, `fs_out` valid.
#[no_mangle]
pub unsafe extern "C" fn flint_fs_create(
    eng: *mut FlintEngine,
    name: *const c_char,
    k: u8,
    m: u8,
    reduction: c_int,
    capacity: u64,
    fs_out: *mut u32,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let (Some(h), Some(name)) = (unsafe { handle(eng) }, unsafe { c_str(name) }) else {
            return -libc::EINVAL;
        };
        let FlintEngine::Local(h) = h else {
            // An appliance's file systems are created by its operator.
            return -libc::EOPNOTSUPP;
        };
        let r = h.engine.fs_create(name, k, m, reduction != 0, capacity);
        // SAFETY: `fs_out` is NULL or valid per the contract.
        unsafe { put(fs_out, r) }
    })
}

/// Finds a file system by name; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `name` a NUL-terminated string, `fs_out` valid.
#[no_mangle]
pub unsafe extern "C" fn flint_fs_lookup(
    eng: *mut FlintEngine,
    name: *const c_char,
    fs_out: *mut u32,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let (Some(h), Some(name)) = (unsafe { handle(eng) }, unsafe { c_str(name) }) else {
            return -libc::EINVAL;
        };
        match h {
            FlintEngine::Local(h) => {
                let r = h.engine.fs_by_name(name).and_then(|fs| {
                    fs.ok_or_else(|| StoreError::NotFound {
                        what: format!("file system {name}"),
                    })
                });
                // SAFETY: `fs_out` is NULL or valid per the contract.
                unsafe { put(fs_out, r) }
            }
            FlintEngine::Remote(r) => {
                if fs_out.is_null() {
                    return -libc::EINVAL;
                }
                // Listing it proves it exists and the session may use it.
                if let Err(e) = r.client.list(name) {
                    return cerr(&e);
                }
                let id = match r.fs_names.iter().position(|n| n == name) {
                    Some(i) => i,
                    None => {
                        r.fs_names.push(name.to_string());
                        r.fs_names.len() - 1
                    }
                };
                // SAFETY: non-NULL and valid per the contract.
                unsafe { fs_out.write(id as u32) };
                0
            }
        }
    })
}

/// Opens (or creates) a file; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `name` a NUL-terminated string, `ino_out` valid.
#[no_mangle]
pub unsafe extern "C" fn flint_file_open(
    eng: *mut FlintEngine,
    fs: u32,
    name: *const c_char,
    create: c_int,
    ino_out: *mut u64,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let (Some(h), Some(name)) = (unsafe { handle(eng) }, unsafe { c_str(name) }) else {
            return -libc::EINVAL;
        };
        let r = match h {
            FlintEngine::Local(h) => match h.engine.lookup(fs, name) {
                Ok(Some(ino)) => Ok(ino),
                Ok(None) if create != 0 => h.engine.create(fs, name),
                Ok(None) => return -libc::ENOENT,
                Err(e) => Err(e),
            },
            FlintEngine::Remote(r) => {
                let Some(fs_name) = r.fs_names.get(fs as usize) else {
                    return -libc::ENOENT;
                };
                match r.client.open(fs_name, name, create != 0) {
                    Ok((ino, _)) => Ok(ino),
                    Err(e) => return cerr(&e),
                }
            }
        };
        // SAFETY: `ino_out` is NULL or valid per the contract.
        unsafe { put(ino_out, r) }
    })
}

/// Gets a file's size; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `size_out` valid.
#[no_mangle]
pub unsafe extern "C" fn flint_file_stat(
    eng: *mut FlintEngine,
    ino: u64,
    size_out: *mut u64,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let Some(h) = (unsafe { handle(eng) }) else {
            return -libc::EINVAL;
        };
        let r = match h {
            FlintEngine::Local(h) => h.engine.stat(ino).map(|st| st.size),
            FlintEngine::Remote(r) => match r.client.stat(ino) {
                Ok(st) => Ok(st.size),
                Err(e) => return cerr(&e),
            },
        };
        // SAFETY: `size_out` is NULL or valid per the contract.
        unsafe { put(size_out, r) }
    })
}

/// Closes a file; see flint.h.
///
/// # Safety
/// `eng` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn flint_file_close(eng: *mut FlintEngine, ino: u64) -> c_int {
    let mut size = 0u64;
    // SAFETY: forwarded per the function's contract; `size` is a valid
    // out-pointer.
    unsafe { flint_file_stat(eng, ino, &mut size) }
}

/// The checks every data call makes: a live handle, and a buffer unless
/// the length is zero.
///
/// # Safety
/// `eng` is NULL or a live handle.
unsafe fn data_call<'a>(
    eng: *mut FlintEngine,
    buf_is_null: bool,
    len: usize,
) -> Result<&'a mut FlintEngine, i64> {
    // SAFETY: forwarded from the caller.
    match unsafe { handle(eng) } {
        Some(h) if !(buf_is_null && len > 0) => Ok(h),
        _ => Err(-i64::from(libc::EINVAL)),
    }
}

/// Writes; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `buf` holds `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn flint_write(
    eng: *mut FlintEngine,
    ino: u64,
    offset: u64,
    buf: *const c_void,
    len: usize,
) -> i64 {
    guard(-i64::from(libc::EIO), || {
        // SAFETY: per the function's contract.
        let h = match unsafe { data_call(eng, buf.is_null(), len) } {
            Ok(h) => h,
            Err(e) => return e,
        };
        // SAFETY: `buf` holds `len` bytes per the contract (or len is 0).
        let data = if len == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
        };
        match h {
            FlintEngine::Local(h) => match h.engine.write(ino, offset, data.to_vec()) {
                Ok(()) => len as i64,
                Err(e) => i64::from(errno(&e)),
            },
            FlintEngine::Remote(r) => match r.client.write(ino, offset, data) {
                Ok(()) => len as i64,
                Err(e) => i64::from(cerr(&e)),
            },
        }
    })
}

/// Reads; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `buf` holds `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn flint_read(
    eng: *mut FlintEngine,
    ino: u64,
    offset: u64,
    buf: *mut c_void,
    len: usize,
) -> i64 {
    guard(-i64::from(libc::EIO), || {
        // SAFETY: per the function's contract.
        let h = match unsafe { data_call(eng, buf.is_null(), len) } {
            Ok(h) => h,
            Err(e) => return e,
        };
        let got = match h {
            FlintEngine::Local(h) => h.engine.read(ino, offset, len).map_err(|e| errno(&e)),
            FlintEngine::Remote(r) => r.client.read(ino, offset, len).map_err(|e| cerr(&e)),
        };
        match got {
            Ok(got) => {
                let n = got.len().min(len);
                // SAFETY: `buf` holds `len` >= n writable bytes.
                unsafe { std::ptr::copy_nonoverlapping(got.as_ptr(), buf.cast(), n) };
                n as i64
            }
            Err(e) => i64::from(e),
        }
    })
}

/// Makes writes durable; see flint.h.
///
/// # Safety
/// `eng` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn flint_fsync(eng: *mut FlintEngine) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let Some(h) = (unsafe { handle(eng) }) else {
            return -libc::EINVAL;
        };
        match h {
            FlintEngine::Local(h) => match h.engine.sync() {
                Ok(()) => 0,
                Err(e) => errno(&e),
            },
            FlintEngine::Remote(r) => match r.client.sync() {
                Ok(()) => 0,
                Err(e) => cerr(&e),
            },
        }
    })
}

/// Queues an operation; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `io` a valid `struct flint_io` whose buffer stays
/// valid and untouched until its completion is returned by `flint_poll`.
#[no_mangle]
pub unsafe extern "C" fn flint_submit(eng: *mut FlintEngine, io: *const FlintIo) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let (Some(h), Some(io)) = (unsafe { handle(eng) }, unsafe { io.as_ref() }) else {
            return -libc::EINVAL;
        };
        if io.size < std::mem::size_of::<FlintIo>() {
            return -libc::EINVAL;
        }
        let Some(kind) = IoOp::from_c(io.op) else {
            return -libc::EINVAL;
        };
        if io.buf.is_null() && io.len > 0 && kind != IoOp::Fsync {
            return -libc::EINVAL;
        }
        let op = Op {
            op: kind,
            ino: io.ino,
            offset: io.offset,
            buf: CBuf(io.buf.cast(), io.len),
            cb_arg: io.cb_arg as usize,
        };
        match h {
            FlintEngine::Local(h) => {
                if kind != IoOp::Fsync && h.engine.shard_map().shards() > 1 {
                    // Pieces of a file may live on several shards; the
                    // asynchronous path reaches only the home shard so far.
                    return -libc::EOPNOTSUPP;
                }
                // At most MAX_IN_FLIGHT operations between submit and poll,
                // so the completion ring (as deep) can never overflow.
                if h.in_flight >= MAX_IN_FLIGHT || h.submit.push(op).is_err() {
                    return -libc::EAGAIN;
                }
                h.in_flight += 1;
                h.waker.wake();
                0
            }
            FlintEngine::Remote(r) => {
                let req = match op.op {
                    IoOp::Read => Request::Read {
                        ino: op.ino,
                        offset: op.offset,
                        len: op.buf.1.min(u32::MAX as usize) as u32,
                    },
                    IoOp::Write => Request::Write {
                        ino: op.ino,
                        offset: op.offset,
                        // SAFETY: the buffer holds len bytes per the contract.
                        data: unsafe { std::slice::from_raw_parts(op.buf.0, op.buf.1) }.to_vec(),
                    },
                    IoOp::Fsync => Request::Sync,
                };
                let tag = r.next_tag;
                match r.client.submit(&req, tag) {
                    Ok(()) => {
                        r.next_tag += 1;
                        let len = op.buf.1;
                        r.pending.insert(tag, (op, len));
                        0
                    }
                    Err(ClientError::Busy) => -libc::EAGAIN,
                    Err(e) => cerr(&e),
                }
            }
        }
    })
}

/// Receives remote completions for up to `wait`, copying read data into
/// the callers' buffers.
fn remote_poll(r: &mut Remote, wait: Duration) -> Result<(), ClientError> {
    for c in r.client.poll(wait)? {
        let Some((op, len)) = r.pending.remove(&c.tag) else {
            continue;
        };
        let result = if c.status < 0 {
            i64::from(c.status)
        } else if op.op == IoOp::Read {
            let n = c.body.len().min(len);
            // SAFETY: the caller keeps the buffer (len bytes) valid until
            // this completion is returned (flint.h).
            unsafe { std::ptr::copy_nonoverlapping(c.body.as_ptr(), op.buf.0, n) };
            n as i64
        } else if op.op == IoOp::Write {
            len as i64
        } else {
            0
        };
        r.ready.push(Done {
            cb_arg: op.cb_arg,
            result,
        });
    }
    Ok(())
}

/// Runs one queued operation on the store (on its reactor).
fn run_op(s: &mut flint_engine::store::Store, op: &Op) -> i64 {
    let r = match op.op {
        IoOp::Read => {
            // SAFETY: the caller keeps the buffer valid and untouched until
            // this operation's completion is returned (flint.h).
            let out = unsafe { std::slice::from_raw_parts_mut(op.buf.0, op.buf.1) };
            s.read_into(op.ino, op.offset, out).map(|n| n as i64)
        }
        IoOp::Write => {
            // SAFETY: as above.
            let data = unsafe { std::slice::from_raw_parts(op.buf.0, op.buf.1) };
            s.write(op.ino, op.offset, data).map(|()| op.buf.1 as i64)
        }
        IoOp::Fsync => s.sync().map(|()| 0),
    };
    r.unwrap_or_else(|e| i64::from(errno(&e)))
}

/// Hands up to `max` finished operations to `out`; returns how many.
///
/// # Safety
/// `out` holds `max` completions.
unsafe fn collect(h: &mut FlintEngine, out: *mut FlintCompletion, max: usize) -> usize {
    let mut n = 0usize;
    let mut emit = |d: Done| {
        // SAFETY: `out` holds `max` entries and at most `max` are written.
        unsafe {
            *out.add(n) = FlintCompletion {
                cb_arg: d.cb_arg as *mut c_void,
                result: d.result,
            }
        };
        n += 1;
    };
    match h {
        FlintEngine::Local(h) => {
            h.done.pop_batch(max, emit);
            h.in_flight -= n;
        }
        FlintEngine::Remote(r) => {
            let take = r.ready.len().min(max);
            for d in r.ready.drain(..take) {
                emit(d);
            }
        }
    }
    n
}

/// Collects finished operations; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `out` holds `max` completions.
#[no_mangle]
pub unsafe extern "C" fn flint_poll(
    eng: *mut FlintEngine,
    out: *mut FlintCompletion,
    max: c_int,
) -> c_int {
    // SAFETY: forwarded per the function's contract.
    unsafe { flint_wait(eng, out, max, 0) }
}

/// Collects finished operations, waiting up to `timeout_us` for the first;
/// see flint.h.
///
/// # Safety
/// `eng` is a live handle and `out` holds `max` completions.
#[no_mangle]
pub unsafe extern "C" fn flint_wait(
    eng: *mut FlintEngine,
    out: *mut FlintCompletion,
    max: c_int,
    timeout_us: u64,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let Some(h) = (unsafe { handle(eng) }) else {
            return -libc::EINVAL;
        };
        if out.is_null() || max < 0 {
            return -libc::EINVAL;
        }
        let deadline = std::time::Instant::now() + Duration::from_micros(timeout_us);
        loop {
            if let FlintEngine::Remote(r) = h {
                if r.ready.is_empty() && !r.pending.is_empty() {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if let Err(e) = remote_poll(r, left) {
                        return cerr(&e);
                    }
                }
            }
            // SAFETY: `out` holds `max` completions.
            let n = unsafe { collect(h, out, max as usize) };
            if n > 0 || std::time::Instant::now() >= deadline {
                return n as c_int;
            }
            std::thread::yield_now();
        }
    })
}
