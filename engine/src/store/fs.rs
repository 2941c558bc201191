//! File systems and organizations: create, resize, delete, owners.

use super::*;
use crate::meta::group::{Group, GroupId};

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('/') || name.contains('\0') {
        return Err(StoreError::Invalid {
            reason: format!("name `{name}` must be 1 to {MAX_NAME} bytes without '/' or NUL"),
        });
    }
    Ok(())
}

impl Store {
    /// Creates a file system with protection k+m.
    pub fn fs_create(
        &mut self,
        name: &str,
        k: u8,
        m: u8,
        reduction: bool,
        capacity: u64,
    ) -> Result<FsId> {
        check_name(name)?;
        let n = self.devs.len();
        if k == 0 || m == 0 || usize::from(k) + usize::from(m) > n {
            return Err(StoreError::Invalid {
                reason: format!(
                    "protection {k}+{m} needs k >= 1, m >= 1 and k + m <= {n} (the devices of this node)"
                ),
            });
        }
        if self.meta.fss.values().any(|f| f.name == name) {
            return Err(StoreError::Exists {
                what: format!("file system {name}"),
            });
        }
        let id = self.meta.next_fs;
        self.record(Record::FsCreate(FsMeta {
            id,
            name: name.into(),
            k,
            m,
            reduction,
            capacity,
            write_back: false,
        }))?;
        self.writer(id)?;
        if self.holds_root(id) {
            self.make_root(id)?;
        }
        Ok(id)
    }

    /// Creates a file system with a given id (every shard of an engine
    /// holds the same file systems under the same ids).
    pub fn fs_create_as(
        &mut self,
        id: FsId,
        name: &str,
        k: u8,
        m: u8,
        reduction: bool,
        capacity: u64,
    ) -> Result<FsId> {
        if self.meta.fss.contains_key(&id) {
            return Err(StoreError::Exists {
                what: format!("file system {id}"),
            });
        }
        if self.meta.next_fs > id {
            return Err(StoreError::Invalid {
                reason: format!("file system id {id} is behind this shard's next id"),
            });
        }
        self.meta.next_fs = id;
        self.fs_create(name, k, m, reduction, capacity)
    }

    /// Sets whether file system `fs` acknowledges before durable.
    pub fn fs_set_write_back(&mut self, fs: FsId, write_back: bool) -> Result<()> {
        if self.fs(fs)?.write_back != write_back {
            self.record(Record::FsMode { fs, write_back })?;
        }
        Ok(())
    }

    /// The next free file system id.
    pub fn next_fs_id(&self) -> FsId {
        self.meta.next_fs
    }

    /// This store's shard.
    pub fn shard(&self) -> u32 {
        self.layout.shard
    }

    /// Shards the engine was formatted with.
    pub fn shards(&self) -> u32 {
        self.layout.shards
    }

    /// File systems.
    pub fn fs_list(&self) -> Vec<(FsMeta, u64)> {
        self.meta
            .fss
            .values()
            .map(|f| (f.clone(), self.meta.fs_used(f.id)))
            .collect()
    }

    /// Changes a file system's capacity.
    pub fn fs_resize(&mut self, fs: FsId, capacity: u64) -> Result<()> {
        self.fs(fs)?;
        self.record(Record::FsResize { fs, capacity })?;
        Ok(())
    }

    pub(super) fn fs(&self, fs: FsId) -> Result<&FsMeta> {
        self.meta.fss.get(&fs).ok_or_else(|| StoreError::NotFound {
            what: format!("file system {fs}"),
        })
    }

    /// A file system by name.
    pub fn fs_by_name(&self, name: &str) -> Option<FsId> {
        self.meta
            .fss
            .values()
            .find(|f| f.name == name)
            .map(|f| f.id)
    }

    /// Deletes a file system with every file (and part of one) it has on
    /// this shard.
    pub fn fs_delete(&mut self, fs: FsId) -> Result<()> {
        self.fs(fs)?;
        if let Some(w) = self.writers.remove(&fs) {
            // The open stripe's slots were reserved, never named by a record.
            self.slots
                .unreserve(w.reserved.into_iter().chain(w.next).flatten());
        }
        self.record(Record::FsDelete { fs })?;
        self.share_quota_defs();
        Ok(())
    }

    /// Creates an organization with a fresh random key (shard 0 keeps
    /// them).
    pub fn org_create(&mut self, name: &str) -> Result<meta::Org> {
        self.org_create_keyed(name, crate::net::auth::random())
    }

    /// Creates an organization with a given key: one that several engines
    /// share (the cluster's own organization, whose sessions carry node to
    /// node traffic).
    pub fn org_create_keyed(&mut self, name: &str, key: [u8; 32]) -> Result<meta::Org> {
        check_name(name)?;
        if self.meta.orgs.values().any(|o| o.name == name) {
            return Err(StoreError::Exists {
                what: format!("organization {name}"),
            });
        }
        let org = meta::Org {
            id: self.meta.orgs.keys().next_back().map_or(1, |k| k + 1),
            name: name.to_string(),
            key,
        };
        self.record(Record::OrgCreate(org.clone()))?;
        Ok(org)
    }

    /// Organizations.
    pub fn orgs(&self) -> Vec<meta::Org> {
        self.meta.orgs.values().cloned().collect()
    }

    /// Gives a file system to an organization.
    pub fn fs_set_owner(&mut self, fs: FsId, org: meta::OrgId) -> Result<()> {
        self.fs(fs)?;
        if !self.meta.orgs.contains_key(&org) {
            return Err(StoreError::NotFound {
                what: format!("organization {org}"),
            });
        }
        self.record(Record::FsOwner { fs, org })?;
        Ok(())
    }

    /// The organization owning a file system, if any.
    pub fn fs_owner(&self, fs: FsId) -> Option<meta::OrgId> {
        self.meta.fs_owner.get(&fs).copied()
    }
}

impl Store {
    /// Creates a filesystem group for organization `org` (0: the
    /// engine's own file systems; shard 0 keeps them).
    pub fn group_create(&mut self, name: &str, org: meta::OrgId) -> Result<Group> {
        check_name(name)?;
        if org != 0 && !self.meta.orgs.contains_key(&org) {
            return Err(StoreError::NotFound {
                what: format!("organization {org}"),
            });
        }
        if self.meta.groups.values().any(|g| g.name == name) {
            return Err(StoreError::Exists {
                what: format!("filesystem group {name}"),
            });
        }
        let g = Group {
            id: self.meta.groups.keys().next_back().map_or(1, |k| k + 1),
            name: name.to_string(),
            org,
        };
        self.record(Record::GroupCreate(g.clone()))?;
        Ok(g)
    }

    /// Deletes an empty filesystem group.
    pub fn group_delete(&mut self, id: GroupId) -> Result<()> {
        let g = self.group(id)?;
        let members: Vec<String> = self
            .meta
            .fs_group
            .iter()
            .filter(|(_, &gr)| gr == id)
            .filter_map(|(fs, _)| self.meta.fss.get(fs).map(|f| f.name.clone()))
            .collect();
        if !members.is_empty() {
            return Err(StoreError::Invalid {
                reason: format!(
                    "filesystem group {} still holds {}; move or delete them first",
                    g.name,
                    members.join(", ")
                ),
            });
        }
        self.record(Record::GroupDelete { id })?;
        Ok(())
    }

    /// Puts file system `fs` in group `group` (0: in none). The group must
    /// be of the organization owning the file system.
    pub fn fs_set_group(&mut self, fs: FsId, group: GroupId) -> Result<()> {
        let name = self.fs(fs)?.name.clone();
        if group != 0 {
            let g = self.group(group)?;
            let owner = self.fs_owner(fs).unwrap_or(0);
            if g.org != owner {
                return Err(StoreError::Invalid {
                    reason: format!(
                        "filesystem group {} belongs to another organization than file \
                         system {name}; use a group of its own organization",
                        g.name
                    ),
                });
            }
        }
        self.record(Record::FsGroup { fs, group })?;
        Ok(())
    }

    fn group(&self, id: GroupId) -> Result<Group> {
        self.meta
            .groups
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: format!("filesystem group {id}"),
            })
    }

    /// Filesystem groups.
    pub fn groups(&self) -> Vec<Group> {
        self.meta.groups.values().cloned().collect()
    }

    /// The group file system `fs` is in, if any.
    pub fn fs_group(&self, fs: FsId) -> Option<GroupId> {
        self.meta.fs_group.get(&fs).copied()
    }
}
