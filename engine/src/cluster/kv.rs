//! What the cluster needs of etcd, as a trait: ranges, transactions with
//! compares, leases. [`super::etcd::Etcd`] speaks it to a real etcd over
//! its v3 JSON gateway; [`Model`] is an in-process etcd with the same
//! semantics (revisions, lease expiry deleting keys, atomic transactions)
//! on a clock its owner sets, for the deterministic simulation.

use std::collections::BTreeMap;
use std::fmt;

/// One key as etcd keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the put that created the key (0: absent).
    pub create_revision: i64,
    /// Revision of the last put.
    pub mod_revision: i64,
    /// Puts since creation.
    pub version: i64,
    /// The lease holding the key (0: none).
    pub lease: i64,
}

/// A range's keys and the store's revision when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
    /// The store's revision.
    pub revision: i64,
}

/// What a compare looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The key's create revision (0 when absent).
    Create(i64),
    /// The key's last modification revision (0 when absent).
    Mod(i64),
    /// The key's value (an absent key never equals).
    Value(Vec<u8>),
}

/// A compare of a transaction: `key`'s target equals the given one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key.
    pub key: Vec<u8>,
    /// What must equal.
    pub target: Target,
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a key, under a lease (0: none).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease (0: none).
        lease: i64,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
}

/// A transaction: if every compare holds, `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The compares, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when they hold.
    pub success: Vec<Op>,
    /// Run when one does not.
    pub failure: Vec<Op>,
}

/// A transaction's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held.
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: i64,
    /// For each `Get` that ran, in order, the key when present.
    pub gets: Vec<Option<KeyValue>>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// No member answered (down, partitioned, electing a leader): retry.
    Unavailable(String),
    /// The lease has expired or was revoked: register anew.
    LeaseGone,
    /// etcd refused the request (a bug or a version mismatch).
    Refused(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Unavailable(e) => {
                write!(
                    f,
                    "etcd unavailable: {e} (check the [cluster] etcd endpoints)"
                )
            }
            KvError::LeaseGone => write!(f, "the lease has expired"),
            KvError::Refused(e) => write!(f, "etcd refused the request: {e}"),
        }
    }
}

impl std::error::Error for KvError {}

/// The etcd operations the cluster uses.
pub trait Kv {
    /// The key `key`, or with `prefix` every key starting with it.
    fn range(&mut self, key: &[u8], prefix: bool) -> Result<Range, KvError>;
    /// Runs a transaction atomically.
    fn txn(&mut self, txn: &Txn) -> Result<TxnResult, KvError>;
    /// A new lease of `ttl_s` seconds; returns its id and granted TTL.
    fn grant(&mut self, ttl_s: i64) -> Result<(i64, i64), KvError>;
    /// Renews a lease; returns its TTL, or `LeaseGone`.
    fn keep_alive(&mut self, lease: i64) -> Result<i64, KvError>;
    /// Ends a lease, deleting its keys.
    fn revoke(&mut self, lease: i64) -> Result<(), KvError>;

    /// Puts one key.
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, KvError> {
        let t = Txn {
            success: vec![Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                lease,
            }],
            ..Txn::default()
        };
        Ok(self.txn(&t)?.revision)
    }
}

#[derive(Debug, Clone)]
struct Lease {
    ttl_ms: u64,
    expires: u64,
}

/// An in-process etcd: one revision counter, keys with create/mod
/// revisions and versions, leases that expire on the model's clock and
/// take their keys with them. Its owner moves the clock ([`Model::set_now`]).
#[derive(Debug, Clone, Default)]
pub struct Model {
    revision: i64,
    keys: BTreeMap<Vec<u8>, KeyValue>,
    leases: BTreeMap<i64, Lease>,
    next_lease: i64,
    now_ms: u64,
}

impl Model {
    /// An empty store at revision 1 (as etcd starts).
    pub fn new() -> Self {
        Model {
            revision: 1,
            next_lease: 0x1000,
            ..Model::default()
        }
    }

    /// Moves the clock to `now_ms` (never backwards), expiring leases.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= self.now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_lease(id);
        }
    }

    /// The clock.
    pub fn now(&self) -> u64 {
        self.now_ms
    }

    /// When lease `id` expires, if it is alive.
    pub fn lease_expiry(&self, id: i64) -> Option<u64> {
        self.leases.get(&id).map(|l| l.expires)
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn end_lease(&mut self, id: i64) {
        self.leases.remove(&id);
        let gone: Vec<Vec<u8>> = self
            .keys
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect();
        if !gone.is_empty() {
            self.revision += 1;
            for k in gone {
                self.keys.remove(&k);
            }
        }
    }

    fn holds(&self, c: &Compare) -> bool {
        let kv = self.keys.get(&c.key);
        match &c.target {
            Target::Create(r) => kv.map_or(0, |k| k.create_revision) == *r,
            Target::Mod(r) => kv.map_or(0, |k| k.mod_revision) == *r,
            Target::Value(v) => kv.is_some_and(|k| &k.value == v),
        }
    }
}

impl Kv for Model {
    fn range(&mut self, key: &[u8], prefix: bool) -> Result<Range, KvError> {
        let kvs = if prefix {
            self.keys
                .range(key.to_vec()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            self.keys.get(key).cloned().into_iter().collect()
        };
        Ok(Range {
            kvs,
            revision: self.revision,
        })
    }

    fn txn(&mut self, txn: &Txn) -> Result<TxnResult, KvError> {
        for op in txn.success.iter().chain(&txn.failure) {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !self.leases.contains_key(lease) {
                    return Err(KvError::LeaseGone);
                }
            }
        }
        let succeeded = txn.compare.iter().all(|c| self.holds(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let writes = ops.iter().any(|o| !matches!(o, Op::Get { .. }));
        let rev = if writes {
            self.revision + 1
        } else {
            self.revision
        };
        let mut gets = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let old = self.keys.get(key);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: old.map_or(rev, |o| o.create_revision),
                        mod_revision: rev,
                        version: old.map_or(0, |o| o.version) + 1,
                        lease: *lease,
                    };
                    self.keys.insert(key.clone(), kv);
                }
                Op::Delete { key } => {
                    self.keys.remove(key);
                }
                Op::Get { key } => gets.push(self.keys.get(key).cloned()),
            }
        }
        self.revision = rev;
        Ok(TxnResult {
            succeeded,
            revision: rev,
            gets,
        })
    }

    fn grant(&mut self, ttl_s: i64) -> Result<(i64, i64), KvError> {
        let id = self.next_lease;
        self.next_lease += 1;
        let ttl_ms = ttl_s.max(1) as u64 * 1000;
        self.leases.insert(
            id,
            Lease {
                ttl_ms,
                expires: self.now_ms + ttl_ms,
            },
        );
        Ok((id, ttl_s.max(1)))
    }

    fn keep_alive(&mut self, lease: i64) -> Result<i64, KvError> {
        let now = self.now_ms;
        match self.leases.get_mut(&lease) {
            Some(l) if l.expires > now => {
                l.expires = now + l.ttl_ms;
                Ok((l.ttl_ms / 1000) as i64)
            }
            _ => Err(KvError::LeaseGone),
        }
    }

    fn revoke(&mut self, lease: i64) -> Result<(), KvError> {
        self.end_lease(lease);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keeps_revisions_leases_and_transactions_as_etcd_does() {
        let mut m = Model::new();
        let (lease, ttl) = m.grant(2).unwrap();
        assert_eq!(ttl, 2);
        let r1 = m.put(b"/a/1", b"x", lease).unwrap();
        let r2 = m.put(b"/a/1", b"y", 0).unwrap();
        assert_eq!(r2, r1 + 1);
        let kv = &m.range(b"/a/1", false).unwrap().kvs[0];
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (r1, r2, 2)
        );
        m.put(b"/a/2", b"z", lease).unwrap();
        m.put(b"/b", b"w", 0).unwrap();
        assert_eq!(m.range(b"/a/", true).unwrap().kvs.len(), 2);

        // A create-if-absent transaction succeeds once.
        let claim = Txn {
            compare: vec![Compare {
                key: b"/lock".to_vec(),
                target: Target::Create(0),
            }],
            success: vec![Op::Put {
                key: b"/lock".to_vec(),
                value: b"me".to_vec(),
                lease,
            }],
            failure: vec![Op::Get {
                key: b"/lock".to_vec(),
            }],
        };
        assert!(m.txn(&claim).unwrap().succeeded);
        let again = m.txn(&claim).unwrap();
        assert!(!again.succeeded);
        assert_eq!(again.gets[0].as_ref().unwrap().value, b"me");

        // Keep-alive moves the expiry; without it, the lease's keys go.
        m.set_now(1500);
        m.keep_alive(lease).unwrap();
        m.set_now(3000);
        assert!(m.range(b"/lock", false).unwrap().kvs.len() == 1);
        m.set_now(3500);
        assert!(m.range(b"/lock", false).unwrap().kvs.is_empty());
        assert_eq!(
            m.range(b"/a/", true).unwrap().kvs.len(),
            1,
            "/a/1 lost its lease"
        );
        assert_eq!(m.keep_alive(lease), Err(KvError::LeaseGone));
        assert_eq!(m.put(b"/c", b"v", lease), Err(KvError::LeaseGone));
    }
}
