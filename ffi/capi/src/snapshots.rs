//! Snapshots and directory quotas through the C ABI, on an embedded
//! engine. Over the protocol they are management operations (the
//! management API and `flint fs snapshot|quota`): a remote handle gets
//! `-EOPNOTSUPP`.

use std::ffi::{c_char, c_int};

use flint_engine::engine::{Engine, SnapInfo};

use super::{c_str, guard, handle, FlintEngine};

/// Longest snapshot name, with its NUL.
const SNAP_NAME: usize = 256;

/// `struct flint_snapshot` (flint.h).
#[repr(C)]
pub struct FlintSnapshot {
    id: u32,
    fs: u32,
    created_ns: i64,
    bytes: u64,
    reclaimable: u64,
    root_ino: u64,
    name: [c_char; SNAP_NAME],
}

impl From<&SnapInfo> for FlintSnapshot {
    fn from(s: &SnapInfo) -> Self {
        let mut name = [0 as c_char; SNAP_NAME];
        for (d, &b) in name
            .iter_mut()
            .zip(s.name.as_bytes().iter().take(SNAP_NAME - 1))
        {
            *d = b as c_char;
        }
        FlintSnapshot {
            id: s.id,
            fs: s.fs,
            created_ns: s.created,
            bytes: s.bytes,
            reclaimable: s.reclaimable,
            root_ino: s.root,
            name,
        }
    }
}

/// `struct flint_quota` (flint.h).
#[repr(C)]
pub struct FlintQuota {
    used: u64,
    hard: u64,
    soft: u64,
    grace_s: u64,
    /// 0 counting, 1 enforcing, 2 being removed.
    state: u32,
    in_grace: u32,
}

/// Runs `f` on the embedded engine behind `eng`.
///
/// # Safety
/// `eng` is a live handle or NULL.
unsafe fn local<T>(
    eng: *mut FlintEngine,
    f: impl FnOnce(&Engine) -> Result<T, c_int>,
) -> Result<T, c_int> {
    // SAFETY: per the function's contract.
    match unsafe { handle(eng) } {
        None => Err(-libc::EINVAL),
        Some(FlintEngine::Local(l)) => f(&l.engine),
        Some(FlintEngine::Remote(_)) => Err(-libc::EOPNOTSUPP),
    }
}

/// # Safety
/// `s` is NULL or NUL-terminated.
unsafe fn name<'a>(s: *const c_char) -> Result<&'a str, c_int> {
    // SAFETY: per the function's contract.
    unsafe { c_str(s) }.ok_or(-libc::EINVAL)
}

fn code<T>(r: Result<T, c_int>) -> c_int {
    r.err().unwrap_or(0)
}

/// Takes a read-only snapshot; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `name` NUL-terminated, `out` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn flint_snapshot_create(
    eng: *mut FlintEngine,
    fs: u32,
    snap: *const c_char,
    out: *mut FlintSnapshot,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                let s = e.snapshot_create(fs, name(snap)?).map_err(|e| e.errno())?;
                if !out.is_null() {
                    // SAFETY: `out` is valid per the contract.
                    out.write(FlintSnapshot::from(&s));
                }
                Ok(())
            })
        })
    })
}

/// Takes a writable snapshot (a clone, file system `FS@NAME`); see
/// flint.h.
///
/// # Safety
/// `eng` is a live handle, `name` NUL-terminated, `clone_fs` NULL or
/// valid.
#[no_mangle]
pub unsafe extern "C" fn flint_snapshot_clone(
    eng: *mut FlintEngine,
    fs: u32,
    snap: *const c_char,
    clone_fs: *mut u32,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                let c = e
                    .snapshot_create_writable(fs, name(snap)?)
                    .map_err(|e| e.errno())?;
                if !clone_fs.is_null() {
                    // SAFETY: `clone_fs` is valid per the contract.
                    clone_fs.write(c.fs);
                }
                Ok(())
            })
        })
    })
}

/// Deletes a snapshot; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_snapshot_delete(
    eng: *mut FlintEngine,
    fs: u32,
    snap: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                e.snapshot_delete(fs, name(snap)?).map_err(|e| e.errno())
            })
        })
    })
}

/// Restores a file system to a snapshot; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `name` NUL-terminated, `keep` NULL or
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_snapshot_restore(
    eng: *mut FlintEngine,
    fs: u32,
    snap: *const c_char,
    keep: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                let keep = if keep.is_null() {
                    None
                } else {
                    Some(name(keep)?)
                };
                e.snapshot_restore(fs, name(snap)?, keep)
                    .map_err(|e| e.errno())
            })
        })
    })
}

/// A file system's snapshots, oldest first; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `out` valid for `max` entries.
#[no_mangle]
pub unsafe extern "C" fn flint_snapshot_list(
    eng: *mut FlintEngine,
    fs: u32,
    out: *mut FlintSnapshot,
    max: c_int,
) -> c_int {
    guard(-libc::EIO, || {
        if out.is_null() || max < 0 {
            return -libc::EINVAL;
        }
        // SAFETY: forwarded per the function's contract.
        let r = unsafe { local(eng, |e| e.snapshot_list(Some(fs)).map_err(|e| e.errno())) };
        match r {
            Ok(list) => {
                for (i, s) in list.iter().take(max as usize).enumerate() {
                    // SAFETY: `out` is valid for `max` entries and i < max.
                    unsafe { out.add(i).write(FlintSnapshot::from(s)) };
                }
                list.len().min(max as usize) as c_int
            }
            Err(code) => code,
        }
    })
}

/// Sets or changes a directory quota and counts the directory; see
/// flint.h.
///
/// # Safety
/// `eng` is a live handle and `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_quota_set(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    hard: u64,
    soft: u64,
    grace_s: u64,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                let q = e
                    .quota_set(fs, name(path)?, hard, soft, grace_s)
                    .map_err(|e| e.errno())?;
                e.quota_scan(q.id).map_err(|e| e.errno())
            })
        })
    })
}

/// Unsets a directory quota; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_quota_unset(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                let q = e.quota_unset(fs, name(path)?).map_err(|e| e.errno())?;
                e.quota_scan(q.id).map_err(|e| e.errno())
            })
        })
    })
}

/// The quota on a directory, with its use; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `path` NUL-terminated, `out` valid.
#[no_mangle]
pub unsafe extern "C" fn flint_quota_get(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    out: *mut FlintQuota,
) -> c_int {
    guard(-libc::EIO, || {
        if out.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: forwarded per the function's contract.
        code(unsafe {
            local(eng, |e| {
                let dir = e
                    .lookup(fs, name(path)?)
                    .map_err(|e| e.errno())?
                    .ok_or(-libc::ENOENT)?;
                let q = e
                    .quota_list(Some(fs))
                    .into_iter()
                    .find(|q| q.quota.dir == dir)
                    .ok_or(-libc::ENODATA)?;
                use flint_engine::meta::quota::QuotaState;
                // SAFETY: `out` is valid per the contract.
                out.write(FlintQuota {
                    used: q.used,
                    hard: q.quota.hard,
                    soft: q.quota.soft,
                    grace_s: q.quota.grace,
                    state: match q.quota.state {
                        QuotaState::Counting => 0,
                        QuotaState::Enforcing => 1,
                        QuotaState::Removing => 2,
                    },
                    in_grace: u32::from(q.in_grace),
                });
                Ok(())
            })
        })
    })
}
