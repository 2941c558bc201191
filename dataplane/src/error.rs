//! The dataplane's error type.
//!
//! Control-path failures (opening a device, pinning a thread, mapping memory)
//! are [`Error`]: an enum with the operation, the object and the OS error, so
//! a log line says what happened and what to do. Per-I/O failures on the hot
//! path are the small `Copy` [`IoError`], carried in a completion.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A dataplane control-path error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A device could not be opened or set up.
    DeviceOpen {
        /// Path of the device or file.
        path: PathBuf,
        /// What was being done (`open`, `stat`, `io_uring setup`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A device's geometry does not fit the request.
    Geometry {
        /// Device name.
        device: String,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// A queue pair could not be created.
    QueuePair {
        /// Device name.
        device: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Memory for a DMA buffer pool could not be mapped.
    Memory {
        /// Bytes requested.
        bytes: usize,
        /// The OS error.
        source: io::Error,
    },
    /// A reactor thread could not be pinned to its core.
    Placement {
        /// The core requested.
        core: usize,
        /// The OS error.
        source: io::Error,
    },
    /// A reactor thread, eventfd or other OS resource could not be created.
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A configuration value is invalid.
    Config {
        /// The key, as written in the TOML file (`reactor.poll_mode`).
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A reactor's inbound ring is full: retry later (back-pressure).
    Busy {
        /// The core whose ring was full.
        core: usize,
    },
    /// The target reactor is not running (never started or already stopped).
    Stopped {
        /// The core.
        core: usize,
    },
    /// No reactor runs on this core.
    NoSuchCore {
        /// The core asked for.
        core: usize,
        /// The cores that do run reactors.
        cores: Vec<usize>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::DeviceOpen { path, op, source } => {
                write!(f, "device {}: {op} failed: {source}", path.display())
            }
            Error::Geometry { device, reason } => write!(f, "device {device}: {reason}"),
            Error::QueuePair { device, op, source } => {
                write!(f, "device {device}: queue pair {op} failed: {source}")
            }
            Error::Memory { bytes, source } => write!(
                f,
                "cannot map {bytes} bytes for DMA buffers: {source} \
                 (lower the pool size or free memory)"
            ),
            Error::Placement { core, source } => write!(
                f,
                "cannot pin reactor to core {core}: {source} \
                 (list only cores this process may run on)"
            ),
            Error::Os { op, source } => write!(f, "{op} failed: {source}"),
            Error::Config { key, reason } => write!(f, "config key `{key}`: {reason}"),
            Error::Busy { core } => write!(f, "reactor on core {core} is busy: ring full"),
            Error::Stopped { core } => write!(f, "reactor on core {core} is not running"),
            Error::NoSuchCore { core, cores } => {
                write!(f, "no reactor on core {core}; reactors run on {cores:?}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::DeviceOpen { source, .. }
            | Error::QueuePair { source, .. }
            | Error::Memory { source, .. }
            | Error::Placement { source, .. }
            | Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result alias for the dataplane.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A per-I/O error, small and `Copy`, carried in a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoError {
    /// The device reported an error (`errno`), e.g. `EIO` or `ENOSPC`.
    Device {
        /// Positive errno value.
        errno: i32,
    },
    /// The device transferred fewer bytes than asked.
    Short {
        /// Bytes requested.
        expected: u32,
        /// Bytes transferred.
        got: u32,
    },
    /// The command addresses blocks past the end of the device.
    OutOfRange {
        /// First block of the command.
        lba: u64,
        /// Blocks in the command.
        blocks: u32,
        /// Blocks on the device.
        capacity: u64,
    },
    /// The buffer is not aligned to the device's requirement, or its length
    /// does not match the command.
    Misaligned {
        /// Buffer address.
        addr: usize,
        /// Buffer length.
        len: usize,
        /// Required alignment.
        align: usize,
    },
    /// The queue pair is full: retry once completions are reaped.
    QueueFull,
    /// The operation is not supported by this device.
    Unsupported,
}

impl IoError {
    /// The negated errno a C caller would see for this error.
    pub fn errno(&self) -> i32 {
        match self {
            IoError::Device { errno } => *errno,
            IoError::Short { .. } => libc::EIO,
            IoError::OutOfRange { .. } => libc::ERANGE,
            IoError::Misaligned { .. } => libc::EINVAL,
            IoError::QueueFull => libc::EAGAIN,
            IoError::Unsupported => libc::EOPNOTSUPP,
        }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Device { errno } => {
                write!(f, "device error: {}", io::Error::from_raw_os_error(*errno))
            }
            IoError::Short { expected, got } => {
                write!(f, "short transfer: {got} of {expected} bytes")
            }
            IoError::OutOfRange {
                lba,
                blocks,
                capacity,
            } => write!(
                f,
                "blocks {lba}..{} are past the end of the device ({capacity} blocks)",
                lba + u64::from(*blocks)
            ),
            IoError::Misaligned { addr, len, align } => write!(
                f,
                "buffer {addr:#x}+{len} is not aligned to {align} bytes or does not match the command"
            ),
            IoError::QueueFull => write!(f, "queue pair full"),
            IoError::Unsupported => write!(f, "operation not supported by the device"),
        }
    }
}

impl std::error::Error for IoError {}
