//! The engine on its reactors: today one [`Store`] owned by reactor 0,
//! reached from any thread by sending it work.
//!
//! Sharding the namespace and the dedup index over every reactor (the
//! design's share-nothing layout) builds on this: each shard's owner core
//! will hold its own slice, and requests for a shard travel to its owner
//! as messages, exactly as calls travel to reactor 0 here.

use std::sync::Arc;
use std::time::Duration;

use flint_dataplane::bdev::BlockDevice;
use flint_dataplane::reactor::{ReactorConfig, ReactorSet};

use crate::store::{Store, StoreConfig, StoreError};

/// Free-space share under which the timer collects garbage.
const GC_BELOW: f64 = 0.25;
/// Stripes one timer tick may collect.
const GC_STEP: usize = 4;

/// A running engine.
pub struct Engine {
    set: ReactorSet,
}

/// Engine errors: the store's, or the reactor's.
pub type Result<T> = std::result::Result<T, StoreError>;

impl Engine {
    /// Starts the reactors (no store yet).
    pub fn start(reactor: &ReactorConfig) -> Result<Engine> {
        Ok(Engine {
            set: ReactorSet::start(reactor)?,
        })
    }

    /// Formats devices as a new engine.
    pub fn format(
        &self,
        devices: Vec<Arc<dyn BlockDevice>>,
        cfg: StoreConfig,
        force: bool,
    ) -> Result<()> {
        self.set
            .call(0, move |core| Store::format(core, &devices, cfg, force))?
    }

    /// Opens (and recovers) the engine on `devices`; `None` = missing.
    pub fn open(&self, devices: Vec<Option<Arc<dyn BlockDevice>>>) -> Result<()> {
        self.open_with(devices, None)
    }

    /// Opens the engine and, with `seal_every`, seals open stripes and
    /// commits their metadata on that period (group commit), so data is
    /// durable within one period even without an fsync. The same timer
    /// runs one step of garbage collection when free space falls below a
    /// quarter, so space comes back without stalling foreground I/O.
    pub fn open_with(
        &self,
        devices: Vec<Option<Arc<dyn BlockDevice>>>,
        seal_every: Option<Duration>,
    ) -> Result<()> {
        self.set.call(0, move |core| {
            let store = Store::open(core, &devices)?;
            core.set_local(Some(store));
            if let Some(period) = seal_every {
                core.add_periodic(period, |core| {
                    if let Some(Some(store)) = core.local::<Option<Store>>() {
                        if store.free_fraction() < GC_BELOW {
                            if let Err(e) = store.gc(GC_STEP) {
                                tracing::warn!(error = %e, "background garbage collection failed");
                            }
                        }
                        if store.has_unsynced() {
                            if let Err(e) = store.sync() {
                                tracing::error!(error = %e, "periodic seal failed");
                            }
                        }
                    }
                });
            }
            Ok(())
        })?
    }

    /// Runs `f` on the store, on its reactor.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.set
            .call(0, move |core| match core.local::<Option<Store>>() {
                Some(Some(store)) => f(store),
                _ => Err(StoreError::NotFound {
                    what: "open engine (open the devices first)".into(),
                }),
            })?
    }

    /// Syncs and checkpoints, then stops the reactors.
    pub fn close(self) -> Result<()> {
        let r = self.call(|s| {
            s.sync()?;
            s.checkpoint()
        });
        let _ = self.set.call(0, |core| core.set_local(None::<Store>));
        self.set.shutdown();
        r
    }
}
