//! The store's errors: one enum, each variant saying what happened and
//! what to do, with the negated errno a C caller or client sees.

use super::*;

/// Store errors.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A device failed an I/O the store could not work around.
    Io {
        /// Device name.
        device: String,
        /// What was being done.
        op: &'static str,
        /// The error.
        error: IoError,
    },
    /// The dataplane refused (queue pair, memory).
    Dataplane(DpError),
    /// A device's on-disk structures are unusable.
    Format {
        /// Device name.
        device: String,
        /// What is wrong.
        error: FormatError,
    },
    /// A device already holds a Flint engine.
    AlreadyFormatted {
        /// Device name.
        device: String,
    },
    /// The devices do not form one engine.
    Mismatch {
        /// What does not match.
        reason: String,
    },
    /// No space left (devices full, file system at capacity, metadata area).
    NoSpace {
        /// What is full and what to do.
        what: String,
    },
    /// A directory quota's limit would be passed (EDQUOT).
    Quota {
        /// Which quota, its limit and use, and what to do.
        what: String,
    },
    /// A file would be larger than its file system's capacity (EFBIG).
    TooLarge {
        /// The limit and what to do.
        what: String,
    },
    /// No such file system or file.
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The name is taken.
    Exists {
        /// The name.
        what: String,
    },
    /// A bad argument.
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The shard is no longer on the reactor the request reached (it moved
    /// at a newer shard-map epoch): retry with the current map.
    Moved {
        /// The shard.
        shard: u32,
    },
    /// The shard is not open on any reactor (the engine was not opened, or
    /// is closing).
    NotOpen {
        /// The shard.
        shard: u32,
    },
    /// The engine is stopping and dropped the request before it ran.
    Stopping,
    /// The metadata tree failed (a page unreadable on every copy, or no
    /// space for new pages).
    Meta(TreeError),
    /// A namespace operation was refused, with its POSIX errno (ENOENT,
    /// EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, ELOOP, EXDEV...).
    Ns(crate::meta::namespace::NsError),
    /// A change to something read-only: a snapshot (EROFS).
    ReadOnly {
        /// What, and what to do.
        what: String,
    },
    /// Data cannot be read: more chunks of its stripe are lost than parity
    /// can rebuild.
    Unrecoverable {
        /// The stripe.
        stripe: u64,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// The negated errno a C caller or a client sees for this error.
    pub fn errno(&self) -> i32 {
        -match self {
            StoreError::NoSpace { .. } => libc::ENOSPC,
            StoreError::TooLarge { .. } => libc::EFBIG,
            StoreError::Quota { .. } => libc::EDQUOT,
            StoreError::NotFound { .. } => libc::ENOENT,
            StoreError::ReadOnly { .. } => libc::EROFS,
            StoreError::Exists { .. } | StoreError::AlreadyFormatted { .. } => libc::EEXIST,
            StoreError::Invalid { .. } | StoreError::Mismatch { .. } => libc::EINVAL,
            StoreError::Io { error, .. } => error.errno(),
            StoreError::Meta(e) => return e.errno(),
            StoreError::Ns(e) => return e.errno(),
            StoreError::Moved { .. } => libc::EAGAIN,
            StoreError::NotOpen { .. } => libc::ENXIO,
            StoreError::Stopping | StoreError::Dataplane(DpError::Stopped { .. }) => {
                libc::ESHUTDOWN
            }
            _ => libc::EIO,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { device, op, error } => write!(f, "device {device}: {op}: {error}"),
            StoreError::Dataplane(e) => write!(f, "{e}"),
            StoreError::Format { device, error } => write!(f, "device {device}: {error}"),
            StoreError::AlreadyFormatted { device } => write!(
                f,
                "device {device} already holds a Flint engine; pass force to overwrite it"
            ),
            StoreError::Mismatch { reason } => write!(f, "devices do not match: {reason}"),
            StoreError::NoSpace { what } => write!(f, "no space: {what}"),
            StoreError::TooLarge { what } => write!(f, "file too large: {what}"),
            StoreError::Quota { what } => write!(f, "quota exceeded: {what}"),
            StoreError::NotFound { what } => write!(f, "not found: {what}"),
            StoreError::ReadOnly { what } => write!(f, "read-only: {what}"),
            StoreError::Exists { what } => write!(f, "already exists: {what}"),
            StoreError::Invalid { reason } => write!(f, "{reason}"),
            StoreError::Moved { shard } => write!(
                f,
                "shard {shard} moved to another reactor; retry with the current shard map"
            ),
            StoreError::NotOpen { shard } => {
                write!(f, "shard {shard} is not open; open the engine first")
            }
            StoreError::Stopping => write!(f, "the engine is stopping; retry once it is back"),
            StoreError::Meta(e) => write!(f, "{e}"),
            StoreError::Ns(e) => write!(f, "{e}"),
            StoreError::Unrecoverable { stripe, reason } => {
                write!(f, "stripe {stripe} cannot be read: {reason}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<DpError> for StoreError {
    fn from(e: DpError) -> Self {
        StoreError::Dataplane(e)
    }
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(super) fn io_err(device: &str, op: &'static str) -> impl FnOnce(IoError) -> StoreError {
    let device = device.to_string();
    move |error| StoreError::Io { device, op, error }
}

/// A metadata tree error as the store reports it: running out of pages is
/// the devices being full.
pub(super) fn meta_err(e: TreeError) -> StoreError {
    match e {
        TreeError::NoSpace => StoreError::NoSpace {
            what: "devices are full: no chunk slot left for metadata pages; delete files \
                   to free space"
                .into(),
        },
        e => StoreError::Meta(e),
    }
}

pub(super) fn not_found(ino: Ino) -> StoreError {
    StoreError::NotFound {
        what: format!("file {ino}"),
    }
}

pub(super) fn ec_err(e: EcError) -> StoreError {
    StoreError::Invalid {
        reason: e.to_string(),
    }
}
