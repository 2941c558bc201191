/*
 * flint.h - Flint's C ABI: an embedded Flint engine in your process, or a
 * client of a running appliance (`flint serve`) behind the same calls.
 *
 * Every function returns 0 (or a byte count) on success and a negated errno
 * on failure; the errors each function can return are listed with it.
 * Handles are opaque. Options structs carry their own size so they can grow:
 * set `size = sizeof(struct ...)`. Link with -lflint.
 */
#ifndef FLINT_H
#define FLINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An open engine. */
typedef struct flint_engine flint_engine;

/* Options for flint_engine_open. */
struct flint_engine_opts {
    size_t size;                      /* sizeof(struct flint_engine_opts) */
    const char *const *device_paths;  /* files or block devices (io_uring, O_DIRECT),
                                         or "ram:NAME" for a RAM device that lives
                                         as long as the process */
    uint32_t device_count;            /* number of paths */
    uint64_t device_bytes;            /* create/extend files to this size (RAM devices:
                                         required); 0: use files as they are */
    int format;                       /* nonzero: format the devices first */
    int force;                        /* nonzero: format over an existing Flint engine */
};

/* Opens an embedded engine on the devices (one reactor, one shard).
 * Returns 0 and sets *out, or:
 *   -EINVAL  bad options (NULL pointers, no devices, size too small)
 *   -EBUSY   a device is already in use by an engine open in this process
 *   -EEXIST  format requested but a device holds an engine and force is 0
 *   -ENOENT  a device path does not exist and device_bytes is 0
 *   -EIO     a device could not be opened, read or written
 */
int flint_engine_open(const struct flint_engine_opts *opts, flint_engine **out);

/* Options for flint_connect. */
struct flint_connect_opts {
    size_t size;           /* sizeof(struct flint_connect_opts) */
    const char *addr;      /* the appliance's data address, "127.0.0.1:7400" */
    const char *org;       /* organization name */
    const char *key_hex;   /* its key, 64 hex digits; or NULL to read key_file */
    const char *key_file;  /* a file holding the key (as `flint org create` prints it) */
};

/* Opens a session with a running appliance as an organization, proving the
 * key by challenge-response (the key never crosses the network). The handle
 * takes every call below; file systems are the appliance's (flint_fs_create
 * is -EOPNOTSUPP: create them with `flint fs create`).
 * Returns 0 and sets *out, or:
 *   -EINVAL     bad options (NULL, malformed address or key)
 *   -ENOENT     key_file does not exist
 *   -EACCES     wrong key or unknown organization
 *   -ETIMEDOUT  no appliance answered
 *   -EPROTO     the appliance could not prove it holds the key
 */
int flint_connect(const struct flint_connect_opts *opts, flint_engine **out);

/* Makes everything durable and closes the engine (or, for a remote handle,
 * waits for operations in flight and ends the session); the handle is freed.
 * Returns 0, or -EINVAL (NULL), -EIO (the final sync failed; data written
 * before the last successful flint_fsync is safe). */
int flint_engine_close(flint_engine *eng);

/* Creates a file system with k data + m parity chunks per stripe.
 * Returns 0 and sets *fs_out, or -EINVAL (bad name or k+m larger than the
 * devices), -EEXIST (name taken), -EIO, -EOPNOTSUPP (remote handle). */
int flint_fs_create(flint_engine *eng, const char *name, uint8_t k, uint8_t m,
                    int reduction, uint64_t capacity, uint32_t *fs_out);

/* Finds a file system by name. Returns 0 and sets *fs_out, or -ENOENT,
 * -EINVAL, -EACCES (remote: another organization's). */
int flint_fs_lookup(flint_engine *eng, const char *name, uint32_t *fs_out);

/* Opens the regular file at `path` ("dir/sub/file", from the file system's
 * root), creating it if `create` is nonzero (its directory must exist).
 * Returns 0 and sets *ino_out, or -ENOENT (no such file, directory or file
 * system), -EISDIR (remote: a directory), -ENOTDIR, -ENAMETOOLONG, -EINVAL
 * (bad name), -EIO. */
int flint_file_open(flint_engine *eng, uint32_t fs, const char *name, int create,
                    uint64_t *ino_out);

/* Gets a file's size. Returns 0, or -ENOENT, -EINVAL. */
int flint_file_stat(flint_engine *eng, uint64_t ino, uint64_t *size_out);

/* Closes a file opened with flint_file_open: the handle keeps no per-file
 * state, so this checks that the file exists and forgets nothing else.
 * Writes are durable once they return (or complete), close or not.
 * Returns 0, or -ENOENT (no such file, e.g. unlinked meanwhile), -EINVAL. */
int flint_file_close(flint_engine *eng, uint64_t ino);

/* Writes len bytes at offset. Acknowledged means durable: once it returns
 * (or its flint_submit completes), the data, parity and metadata are on the
 * devices (the write-ahead log, group-committed across writers), unless the
 * file system is in write_back mode (durable at flint_fsync or the seal
 * tick, within 20 ms).
 * Returns len, or -ENOENT, -ENOSPC (device or file system full), -EINVAL,
 * -EIO. */
int64_t flint_write(flint_engine *eng, uint64_t ino, uint64_t offset,
                    const void *buf, size_t len);

/* Reads up to len bytes at offset. Returns the bytes read (0 at or past the
 * end), or -ENOENT, -EINVAL, -EIO (data lost beyond what parity can
 * rebuild). */
int64_t flint_read(flint_engine *eng, uint64_t ino, uint64_t offset, void *buf,
                   size_t len);

/* Makes every write so far durable (data, parity and metadata), also in a
 * write_back file system; seals open stripes.
 * Returns 0, or -EIO, -ENOSPC. */
int flint_fsync(flint_engine *eng);

/* The namespace, by path (relative to the file system's root). Every call
 * returns 0 or a negated POSIX errno: -ENOENT, -EEXIST, -ENOTDIR, -EISDIR,
 * -ENOTEMPTY, -EINVAL (e.g. a directory moved under itself), -ENAMETOOLONG,
 * -ELOOP, -EXDEV, -EMLINK, -ENOSPC, -EACCES (remote: another
 * organization's), -EIO. */
struct flint_stat {
    size_t size;        /* sizeof(struct flint_stat), set by the caller */
    uint64_t ino;
    uint64_t st_size;   /* bytes */
    uint64_t blocks;    /* 4 KiB blocks stored on the inode's home shard */
    uint32_t mode;      /* kind and permission bits, as st_mode */
    uint32_t nlink;
    uint32_t uid;
    uint32_t gid;
    int64_t atime_ns;   /* nanoseconds since the epoch */
    int64_t mtime_ns;
    int64_t ctime_ns;
};

/* The attributes of the inode at `path` (a symlink itself, not its target). */
int flint_stat_path(flint_engine *eng, uint32_t fs, const char *path,
                    struct flint_stat *out);
/* Creates a directory with permission bits `perm`. */
int flint_mkdir(flint_engine *eng, uint32_t fs, const char *path, uint32_t perm);
/* Removes an empty directory. */
int flint_rmdir(flint_engine *eng, uint32_t fs, const char *path);
/* Removes a name that is not a directory; the file goes with its last name. */
int flint_unlink(flint_engine *eng, uint32_t fs, const char *path);

enum flint_rename_flags { FLINT_RENAME_NOREPLACE = 1, FLINT_RENAME_EXCHANGE = 2 };
/* Renames `from` to `to` (flags: 0, FLINT_RENAME_NOREPLACE or
 * FLINT_RENAME_EXCHANGE). */
int flint_rename(flint_engine *eng, uint32_t fs, const char *from, const char *to,
                 uint32_t flags);
/* A hard link: `to` names the inode `from` names. */
int flint_link(flint_engine *eng, uint32_t fs, const char *from, const char *to);
/* A symbolic link at `path` pointing to `target`. */
int flint_symlink(flint_engine *eng, uint32_t fs, const char *target, const char *path);
/* Copies up to len bytes of the target of the symlink at `path` into buf
 * (no NUL added). Returns the target's full length, or a negated errno. */
int64_t flint_readlink(flint_engine *eng, uint32_t fs, const char *path, char *buf,
                       size_t len);

struct flint_dirent {
    uint64_t ino;
    uint64_t cookie;    /* pass the last one back to continue */
    uint32_t mode;      /* kind and permission bits */
    char name[256];     /* NUL-terminated */
};
/* Up to max entries of the directory at `path` after `cookie` (0: from the
 * start), without "." and "..". Returns how many (0 at the end), or a
 * negated errno. An entry present for the whole listing is returned exactly
 * once, however the directory changes meanwhile. */
int flint_readdir(flint_engine *eng, uint32_t fs, const char *path, uint64_t cookie,
                  struct flint_dirent *out, int max);

/* Extended attributes of the inode at `path`. Names up to 255 bytes,
 * values up to 1 KiB (-E2BIG beyond). flint_setxattr's flags: 0 create or
 * replace, FLINT_XATTR_CREATE (-EEXIST if present), FLINT_XATTR_REPLACE
 * (-ENODATA if missing). flint_getxattr copies the value and
 * flint_listxattr the NUL-terminated names one after another into buf:
 * both return the full length, -ERANGE if len is nonzero and too small,
 * and only the length with len 0. -ENODATA: no such attribute. */
enum flint_xattr_flags { FLINT_XATTR_CREATE = 1, FLINT_XATTR_REPLACE = 2 };
int flint_setxattr(flint_engine *eng, uint32_t fs, const char *path, const char *name,
                   const void *value, size_t len, uint32_t flags);
int64_t flint_getxattr(flint_engine *eng, uint32_t fs, const char *path, const char *name,
                       char *buf, size_t len);
int64_t flint_listxattr(flint_engine *eng, uint32_t fs, const char *path, char *buf,
                        size_t len);
int flint_removexattr(flint_engine *eng, uint32_t fs, const char *path, const char *name);

/* Snapshots (embedded engines; over the protocol use the management API:
 * a remote handle gets -EOPNOTSUPP). A snapshot is read-only, taken at once
 * whatever the file system's size, and reached in the mount under
 * /.snapshots/NAME; its root_ino reads like any directory's inode.
 * reclaimable: the bytes deleting it alone would free. */
struct flint_snapshot {
    uint32_t id;
    uint32_t fs;
    int64_t created_ns;
    uint64_t bytes;        /* the file system's logical bytes when taken */
    uint64_t reclaimable;
    uint64_t root_ino;
    char name[256];        /* NUL-terminated */
};
/* Takes snapshot `name` of fs (out may be NULL). -EEXIST: the name is taken. */
int flint_snapshot_create(flint_engine *eng, uint32_t fs, const char *name,
                          struct flint_snapshot *out);
/* A writable snapshot: a clone of fs now, file system "FS@NAME" of its own
 * (its id in *clone_fs, NULL allowed) that diverges and is never read-only;
 * delete it with the file system. Costs fs's metadata, not its data. */
int flint_snapshot_clone(flint_engine *eng, uint32_t fs, const char *name, uint32_t *clone_fs);
int flint_snapshot_delete(flint_engine *eng, uint32_t fs, const char *name);
/* The file system back to snapshot `name`; keep_current (or NULL) names a
 * snapshot of its state before. Stop writers first. */
int flint_snapshot_restore(flint_engine *eng, uint32_t fs, const char *name,
                           const char *keep_current);
/* Up to max snapshots of fs, oldest first; returns how many. */
int flint_snapshot_list(flint_engine *eng, uint32_t fs, struct flint_snapshot *out, int max);

/* Directory quotas (embedded engines; -EOPNOTSUPP remotely). A quota limits
 * the logical bytes of the regular files and symlink targets under a
 * directory: writes growing
 * a file past `hard`, or past `soft` once use has stayed above it for
 * grace_s seconds, fail with -EDQUOT (0: no such limit). Quotas nest up to
 * 4 deep; renames and hard links across a quota's boundary fail with
 * -EXDEV. flint_quota_set counts the directory's contents before it
 * returns (it changes the limits of a quota already there);
 * flint_quota_get gives -ENODATA for a directory without one. */
struct flint_quota {
    uint64_t used;
    uint64_t hard;
    uint64_t soft;
    uint64_t grace_s;
    uint32_t state;        /* 0 counting, 1 enforcing, 2 being removed */
    uint32_t in_grace;     /* over soft, grace still running */
};
int flint_quota_set(flint_engine *eng, uint32_t fs, const char *path, uint64_t hard,
                    uint64_t soft, uint64_t grace_s);
int flint_quota_unset(flint_engine *eng, uint32_t fs, const char *path);
int flint_quota_get(flint_engine *eng, uint32_t fs, const char *path, struct flint_quota *out);

/* Asynchronous I/O. */
enum flint_op { FLINT_OP_READ = 0, FLINT_OP_WRITE = 1, FLINT_OP_FSYNC = 2 };

struct flint_io {
    size_t size;      /* sizeof(struct flint_io) */
    int op;           /* enum flint_op */
    uint64_t ino;     /* read and write */
    uint64_t offset;  /* read and write */
    void *buf;        /* read and write: must stay valid until completed */
    size_t len;       /* read and write */
    void *cb_arg;     /* returned in the completion */
};

struct flint_completion {
    void *cb_arg;     /* the submitted cb_arg */
    int64_t result;   /* as the blocking call would return */
};

/* Queues an operation. Returns 0, or -EINVAL (bad op or size), -EAGAIN
 * (the engine's queue, or a remote session's credits, are full: poll, then
 * retry), -EOPNOTSUPP (reads and writes on an embedded engine formatted with
 * several shards). Remote handles copy a write's data at submission. */
int flint_submit(flint_engine *eng, const struct flint_io *io);

/* Collects up to max finished operations into out, without blocking.
 * Returns how many, or -EINVAL. */
int flint_poll(flint_engine *eng, struct flint_completion *out, int max);

/* Like flint_poll, but waits up to timeout_us microseconds for the first
 * completion (remote handles sleep in the socket meanwhile). Returns how
 * many (0 on timeout), or -EINVAL, or a remote session's error (-ETIMEDOUT,
 * -EACCES...). */
int flint_wait(flint_engine *eng, struct flint_completion *out, int max,
               uint64_t timeout_us);

#ifdef __cplusplus
}
#endif

#endif /* FLINT_H */
