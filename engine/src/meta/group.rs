//! Filesystem groups: named sets of an organization's file systems, the
//! unit later policies (tiering) attach to. Kept by shard 0, like
//! organizations; a file system belongs to at most one group, of its own
//! organization.

use crate::codec::{DecodeError, Reader, Writer};

use super::{OrgId, MAX_NAME};

/// A group id (from 1; 0 is "no group").
pub type GroupId = u32;

/// A filesystem group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Id.
    pub id: GroupId,
    /// Name, unique in the engine.
    pub name: String,
    /// The organization whose file systems it may hold (0: the engine's
    /// own, for file systems no organization owns).
    pub org: OrgId,
}

impl Group {
    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.id).str(&self.name).u32(self.org);
    }

    /// Reads one.
    pub fn decode(r: &mut Reader<'_>) -> Result<Group, DecodeError> {
        let id = r.u32("group id")?;
        if id == 0 {
            return Err(DecodeError { what: "group id" });
        }
        Ok(Group {
            id,
            name: r.str(MAX_NAME, "group name")?,
            org: r.u32("group org")?,
        })
    }
}
