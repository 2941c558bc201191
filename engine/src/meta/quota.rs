//! Directory quotas: a limit on the logical bytes under a directory — the
//! sizes `stat` shows of its regular files and symlinks (a symlink's is
//! its target's length; directories show 0).
//!
//! Every inode carries the id of the innermost quota whose directory it
//! lies under ([`crate::meta::namespace::Attr::quota`], 0: none); a new
//! inode takes its directory's. Each shard counts, per quota, the bytes of
//! the files whose inodes it holds ([`Record::QuotaTag`] moves a file
//! between quotas with its bytes), so a quota's use is the sum over the
//! shards of its own count and those of the quotas nested in it. Setting
//! a quota on a populated directory tags its subtree in the background
//! ([`QuotaState::Counting`]) before the limit is enforced; unsetting one
//! gives its subtree back to its parent ([`QuotaState::Removing`]).
//! Definitions are kept by shard 0, like organizations.
//!
//! [`Record::QuotaTag`]: super::Record::QuotaTag

use crate::codec::{DecodeError, Reader, Writer};

use super::{FsId, Ino};

/// A quota id, unique in the engine (from 1; 0 is "no quota").
pub type QuotaId = u32;

/// Deepest nesting of quotas (a quota inside three others).
pub const MAX_QUOTA_DEPTH: usize = 4;

/// Where a quota is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaState {
    /// Its subtree is being tagged and counted: not enforced yet.
    Counting,
    /// Counted and enforced.
    Enforcing,
    /// Being unset: its subtree goes back to its parent quota.
    Removing,
}

impl QuotaState {
    fn code(self) -> u8 {
        match self {
            QuotaState::Counting => 0,
            QuotaState::Enforcing => 1,
            QuotaState::Removing => 2,
        }
    }

    fn from_code(c: u8) -> Option<QuotaState> {
        Some(match c {
            0 => QuotaState::Counting,
            1 => QuotaState::Enforcing,
            2 => QuotaState::Removing,
            _ => return None,
        })
    }

    /// The name the management API and the CLI show.
    pub fn name(self) -> &'static str {
        match self {
            QuotaState::Counting => "counting",
            QuotaState::Enforcing => "enforcing",
            QuotaState::Removing => "removing",
        }
    }
}

/// A directory quota's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Id.
    pub id: QuotaId,
    /// File system.
    pub fs: FsId,
    /// The directory it limits (with everything under it).
    pub dir: Ino,
    /// The path it was set on (for display; renames do not follow it).
    pub path: String,
    /// The quota it is nested in (0: none).
    pub parent: QuotaId,
    /// Bytes past which writes fail with `EDQUOT` (0: no hard limit).
    pub hard: u64,
    /// Bytes past which an alert is raised, and writes fail once the
    /// grace has run out (0: no soft limit).
    pub soft: u64,
    /// How long use may stay above `soft`, in seconds.
    pub grace: u64,
    /// When use first went above `soft` (nanoseconds since the epoch; 0:
    /// it is not above).
    pub over_since: i64,
    /// Counting, enforcing or being removed.
    pub state: QuotaState,
}

impl Quota {
    /// Whether use of `used` bytes plus `grow` more is refused at `now`.
    pub fn refuses(&self, used: u64, grow: u64, now: i64) -> bool {
        if self.state != QuotaState::Enforcing {
            return false;
        }
        let after = used.saturating_add(grow);
        if self.hard != 0 && after > self.hard {
            return true;
        }
        self.soft != 0 && after > self.soft && self.grace_over(now)
    }

    /// Whether use has been above the soft limit for longer than the grace.
    pub fn grace_over(&self, now: i64) -> bool {
        self.over_since != 0
            && now.saturating_sub(self.over_since)
                >= (self.grace as i64).saturating_mul(1_000_000_000)
    }

    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.id).u32(self.fs).u64(self.dir).str(&self.path);
        w.u32(self.parent)
            .u64(self.hard)
            .u64(self.soft)
            .u64(self.grace);
        w.u64(self.over_since as u64).u8(self.state.code());
    }

    /// Reads one.
    pub fn decode(r: &mut Reader<'_>) -> Result<Quota, DecodeError> {
        let id = r.u32("quota id")?;
        if id == 0 {
            return Err(DecodeError { what: "quota id" });
        }
        Ok(Quota {
            id,
            fs: r.u32("quota fs")?,
            dir: r.u64("quota dir")?,
            path: r.str(crate::meta::namespace::PATH_MAX, "quota path")?,
            parent: r.u32("quota parent")?,
            hard: r.u64("quota hard")?,
            soft: r.u64("quota soft")?,
            grace: r.u64("quota grace")?,
            over_since: r.u64("quota over since")? as i64,
            state: QuotaState::from_code(r.u8("quota state")?).ok_or(DecodeError {
                what: "quota state",
            })?,
        })
    }
}
