//! The namespace through the C ABI: path-based calls (stat, mkdir, rmdir,
//! unlink, rename, link, symlink, readlink, readdir, extended attributes)
//! on an embedded engine
//! or over the data protocol. Paths are relative to the file system's root,
//! `/`-separated.

use std::ffi::{c_char, c_int, c_void};

use flint_engine::engine::{root_ctx, Engine};
use flint_engine::meta::namespace::{RenameFlags, XattrMode};
use flint_engine::net::client::{Client, ClientError};
use flint_engine::net::wire::FileStat;
use flint_engine::store::{Stat, StoreError};

use super::{c_str, cerr, guard, handle, FlintEngine};

/// `struct flint_stat` (flint.h).
#[repr(C)]
pub struct FlintStat {
    size: usize,
    ino: u64,
    st_size: u64,
    blocks: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    atime_ns: i64,
    mtime_ns: i64,
    ctime_ns: i64,
}

/// Longest entry name, with its NUL.
const DIRENT_NAME: usize = 256;

/// `struct flint_dirent` (flint.h).
#[repr(C)]
pub struct FlintDirent {
    ino: u64,
    cookie: u64,
    mode: u32,
    name: [c_char; DIRENT_NAME],
}

/// An entry's attributes whichever side they came from.
struct Attrs {
    ino: u64,
    size: u64,
    blocks: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    atime: i64,
    mtime: i64,
    ctime: i64,
    cookie: u64,
    name: String,
}

impl From<Stat> for Attrs {
    fn from(s: Stat) -> Attrs {
        Attrs {
            ino: s.ino,
            size: s.size,
            blocks: s.blocks,
            mode: s.mode,
            nlink: s.nlink,
            uid: s.uid,
            gid: s.gid,
            atime: s.atime,
            mtime: s.mtime,
            ctime: s.ctime,
            cookie: 0,
            name: s.name,
        }
    }
}

impl From<FileStat> for Attrs {
    fn from(s: FileStat) -> Attrs {
        Attrs {
            ino: s.ino,
            size: s.size,
            blocks: s.blocks,
            mode: s.mode,
            nlink: s.nlink,
            uid: s.uid,
            gid: s.gid,
            atime: s.atime,
            mtime: s.mtime,
            ctime: s.ctime,
            cookie: s.cookie,
            name: s.name,
        }
    }
}

/// Runs a path call on an embedded engine (`local`, with the file system's
/// id) or a remote one (`remote`, with its name).
///
/// # Safety
/// `eng` is NULL or a live handle; `path` NULL or NUL-terminated.
unsafe fn on_path<T>(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    local: impl FnOnce(&Engine, u32, &str) -> Result<T, StoreError>,
    remote: impl FnOnce(&mut Client, &str, &str) -> Result<T, ClientError>,
) -> Result<T, c_int> {
    // SAFETY: per the function's contract.
    let (Some(h), Some(path)) = (unsafe { handle(eng) }, unsafe { c_str(path) }) else {
        return Err(-libc::EINVAL);
    };
    match h {
        FlintEngine::Local(l) => local(&l.engine, fs, path).map_err(|e| e.errno()),
        FlintEngine::Remote(r) => {
            let Some(name) = r.fs_names.get(fs as usize).cloned() else {
                return Err(-libc::ENOENT);
            };
            remote(&mut r.client, &name, path).map_err(|e| cerr(&e))
        }
    }
}

/// A second path argument.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn second(p: *const c_char) -> Result<String, c_int> {
    // SAFETY: per the function's contract.
    unsafe { c_str(p) }.map(str::to_string).ok_or(-libc::EINVAL)
}

fn status(r: Result<(), c_int>) -> c_int {
    r.err().unwrap_or(0)
}

/// The attributes of the inode at a path (a symlink itself); see flint.h.
///
/// # Safety
/// `eng` is a live handle, `path` NUL-terminated, `out` valid with its
/// `size` set.
#[no_mangle]
pub unsafe extern "C" fn flint_stat_path(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    out: *mut FlintStat,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: checked for NULL; valid per the contract.
        let Some(out) = (unsafe { out.as_mut() }) else {
            return -libc::EINVAL;
        };
        if out.size < std::mem::size_of::<FlintStat>() {
            return -libc::EINVAL;
        }
        // SAFETY: forwarded per the function's contract.
        let r = unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| e.stat_path(fs, p).map(Attrs::from),
                |c, fs, p| c.stat_path(fs, p).map(Attrs::from),
            )
        };
        match r {
            Ok(a) => {
                *out = FlintStat {
                    size: out.size,
                    ino: a.ino,
                    st_size: a.size,
                    blocks: a.blocks,
                    mode: a.mode,
                    nlink: a.nlink,
                    uid: a.uid,
                    gid: a.gid,
                    atime_ns: a.atime,
                    mtime_ns: a.mtime,
                    ctime_ns: a.ctime,
                };
                0
            }
            Err(code) => code,
        }
    })
}

/// Creates a directory; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_mkdir(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    perm: u32,
) -> c_int {
    guard(-libc::EIO, || {
        let perm = perm & 0o7777;
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| e.mkdir(fs, p, perm).map(|_| ()),
                |c, fs, p| c.mkdir(fs, p, perm).map(|_| ()),
            )
        })
    })
}

/// Removes an empty directory; see flint.h.
///
/// # Safety
/// `eng` is a live handle and `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_rmdir(eng: *mut FlintEngine, fs: u32, path: *const c_char) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| e.rmdir(fs, p),
                |c, fs, p| c.rmdir(fs, p),
            )
        })
    })
}

/// Removes a name (not a directory); see flint.h.
///
/// # Safety
/// `eng` is a live handle and `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_unlink(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| e.unlink(fs, p),
                |c, fs, p| c.unlink(fs, p),
            )
        })
    })
}

/// Renames; see flint.h.
///
/// # Safety
/// `eng` is a live handle; `from` and `to` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_rename(
    eng: *mut FlintEngine,
    fs: u32,
    from: *const c_char,
    to: *const c_char,
    flags: u32,
) -> c_int {
    guard(-libc::EIO, || {
        if flags > 2 {
            return -libc::EINVAL;
        }
        // SAFETY: per the function's contract.
        let to = match unsafe { second(to) } {
            Ok(t) => t,
            Err(code) => return code,
        };
        let f = RenameFlags {
            noreplace: flags & 1 != 0,
            exchange: flags & 2 != 0,
        };
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                from,
                |e, fs, p| e.rename(fs, p, &to, f),
                |c, fs, p| c.rename(fs, p, &to, flags as u8),
            )
        })
    })
}

/// A hard link; see flint.h.
///
/// # Safety
/// `eng` is a live handle; `from` and `to` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_link(
    eng: *mut FlintEngine,
    fs: u32,
    from: *const c_char,
    to: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let to = match unsafe { second(to) } {
            Ok(t) => t,
            Err(code) => return code,
        };
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                from,
                |e, fs, p| e.link(fs, p, &to).map(|_| ()),
                |c, fs, p| c.link(fs, p, &to).map(|_| ()),
            )
        })
    })
}

/// A symbolic link at `path` to `target`; see flint.h.
///
/// # Safety
/// `eng` is a live handle; `target` and `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_symlink(
    eng: *mut FlintEngine,
    fs: u32,
    target: *const c_char,
    path: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let target = match unsafe { second(target) } {
            Ok(t) => t,
            Err(code) => return code,
        };
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| e.symlink(fs, &target, p).map(|_| ()),
                |c, fs, p| c.symlink(fs, &target, p).map(|_| ()),
            )
        })
    })
}

/// A symbolic link's target; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `path` NUL-terminated, `buf` valid for `len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn flint_readlink(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    guard(-i64::from(libc::EIO), || {
        if buf.is_null() && len > 0 {
            return -i64::from(libc::EINVAL);
        }
        // SAFETY: forwarded per the function's contract.
        let r = unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| e.readlink_path(fs, p),
                |c, fs, p| c.readlink(fs, p),
            )
        };
        match r {
            Ok(target) => {
                let n = target.len().min(len);
                // SAFETY: `buf` is valid for `len` >= n bytes per the
                // contract; the source is a separate Rust allocation.
                unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), n) };
                target.len() as i64
            }
            Err(code) => i64::from(code),
        }
    })
}

/// A page of a directory's entries; see flint.h.
///
/// # Safety
/// `eng` is a live handle, `path` NUL-terminated, `out` valid for `max`
/// entries.
#[no_mangle]
pub unsafe extern "C" fn flint_readdir(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    cookie: u64,
    out: *mut FlintDirent,
    max: c_int,
) -> c_int {
    guard(-libc::EIO, || {
        if out.is_null() || max <= 0 {
            return -libc::EINVAL;
        }
        let max = max as usize;
        // SAFETY: forwarded per the function's contract.
        let r = unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| {
                    e.list_page(fs, p, cookie, max).map(|v| {
                        v.into_iter()
                            .map(|(st, c)| Attrs {
                                cookie: c,
                                ..Attrs::from(st)
                            })
                            .collect::<Vec<_>>()
                    })
                },
                |c, fs, p| {
                    c.list_page(fs, p, cookie, max as u32)
                        .map(|v| v.into_iter().map(Attrs::from).collect::<Vec<_>>())
                },
            )
        };
        let page = match r {
            Ok(p) => p,
            Err(code) => return code,
        };
        for (i, a) in page.iter().take(max).enumerate() {
            let mut name = [0 as c_char; DIRENT_NAME];
            for (d, &b) in name
                .iter_mut()
                .zip(a.name.as_bytes().iter().take(DIRENT_NAME - 1))
            {
                *d = b as c_char;
            }
            // SAFETY: `out` is valid for `max` entries and i < max.
            unsafe {
                out.add(i).write(FlintDirent {
                    ino: a.ino,
                    cookie: a.cookie,
                    mode: a.mode,
                    name,
                })
            };
        }
        page.len().min(max) as c_int
    })
}

/// Copies `bytes` into a caller's buffer of `len` bytes (as much as fits)
/// and returns their full length, or `-ERANGE` when `len` is nonzero and
/// too small (as `getxattr(2)` does); `len` 0 asks for the size.
///
/// # Safety
/// `buf` is valid for `len` bytes (NULL when `len` is 0).
unsafe fn copy_out(bytes: &[u8], buf: *mut c_char, len: usize) -> i64 {
    if len == 0 {
        return bytes.len() as i64;
    }
    if bytes.len() > len {
        return -i64::from(libc::ERANGE);
    }
    // SAFETY: `buf` is valid for `len` >= bytes.len() bytes per the
    // contract; the source is a separate Rust allocation.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len()) };
    bytes.len() as i64
}

/// Sets an extended attribute; see flint.h.
///
/// # Safety
/// `eng` is a live handle; `path` and `name` NUL-terminated; `value`
/// valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flint_setxattr(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    name: *const c_char,
    value: *const c_void,
    len: usize,
    flags: u32,
) -> c_int {
    guard(-libc::EIO, || {
        if flags > 2 || (value.is_null() && len > 0) {
            return -libc::EINVAL;
        }
        // SAFETY: per the function's contract.
        let name = match unsafe { second(name) } {
            Ok(n) => n,
            Err(code) => return code,
        };
        let value: Vec<u8> = if len == 0 {
            Vec::new()
        } else {
            // SAFETY: `value` is valid for `len` bytes per the contract.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len) }.to_vec()
        };
        let mode = match flags {
            1 => XattrMode::Create,
            2 => XattrMode::Replace,
            _ => XattrMode::Any,
        };
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| {
                    let st = e.stat_path(fs, p)?;
                    e.setxattr(st.ino, name.as_bytes(), &value, mode, root_ctx())
                },
                |c, fs, p| c.setxattr(fs, p, &name, &value, flags as u8),
            )
        })
    })
}

/// An extended attribute's value; see flint.h.
///
/// # Safety
/// `eng` is a live handle; `path` and `name` NUL-terminated; `buf` valid
/// for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flint_getxattr(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    name: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    guard(-i64::from(libc::EIO), || {
        if buf.is_null() && len > 0 {
            return -i64::from(libc::EINVAL);
        }
        // SAFETY: per the function's contract.
        let name = match unsafe { second(name) } {
            Ok(n) => n,
            Err(code) => return i64::from(code),
        };
        // SAFETY: forwarded per the function's contract.
        let r = unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| {
                    let st = e.stat_path(fs, p)?;
                    e.getxattr(st.ino, name.as_bytes())
                },
                |c, fs, p| c.getxattr(fs, p, &name),
            )
        };
        match r {
            // SAFETY: `buf` is valid for `len` bytes per the contract.
            Ok(v) => unsafe { copy_out(&v, buf, len) },
            Err(code) => i64::from(code),
        }
    })
}

/// The names of an inode's extended attributes, each NUL-terminated, one
/// after another (as `listxattr(2)`); see flint.h.
///
/// # Safety
/// `eng` is a live handle; `path` NUL-terminated; `buf` valid for `len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn flint_listxattr(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    guard(-i64::from(libc::EIO), || {
        if buf.is_null() && len > 0 {
            return -i64::from(libc::EINVAL);
        }
        // SAFETY: forwarded per the function's contract.
        let r = unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| {
                    let st = e.stat_path(fs, p)?;
                    e.listxattr(st.ino)
                },
                |c, fs, p| c.listxattr(fs, p),
            )
        };
        match r {
            Ok(names) => {
                let mut all = Vec::new();
                for n in names {
                    all.extend_from_slice(&n);
                    all.push(0);
                }
                // SAFETY: `buf` is valid for `len` bytes per the contract.
                unsafe { copy_out(&all, buf, len) }
            }
            Err(code) => i64::from(code),
        }
    })
}

/// Removes an extended attribute; see flint.h.
///
/// # Safety
/// `eng` is a live handle; `path` and `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn flint_removexattr(
    eng: *mut FlintEngine,
    fs: u32,
    path: *const c_char,
    name: *const c_char,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: per the function's contract.
        let name = match unsafe { second(name) } {
            Ok(n) => n,
            Err(code) => return code,
        };
        // SAFETY: forwarded per the function's contract.
        status(unsafe {
            on_path(
                eng,
                fs,
                path,
                |e, fs, p| {
                    let st = e.stat_path(fs, p)?;
                    e.removexattr(st.ino, name.as_bytes(), root_ctx())
                },
                |c, fs, p| c.removexattr(fs, p, &name),
            )
        })
    })
}
