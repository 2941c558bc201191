//! Events and alerts: device failures, degraded reads, rebuilds, capacity
//! thresholds, starts and stops — kept in a bounded log the management API
//! serves, and logged as they happen.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// For the record.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Sequence number (from 1).
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// Severity.
    pub level: Level,
    /// What kind: `started`, `stopping`, `device_failed`, `degraded`,
    /// `rebuilt`, `capacity`.
    pub kind: &'static str,
    /// Human words.
    pub message: String,
}

/// Events kept, at most.
const KEEP: usize = 1000;

/// The event log.
#[derive(Debug, Default)]
pub struct Events(Mutex<(u64, VecDeque<Event>)>);

impl Events {
    /// Records an event.
    pub fn push(&self, level: Level, kind: &'static str, message: impl Into<String>) {
        let message = message.into();
        match level {
            Level::Info => tracing::info!(kind, "{message}"),
            Level::Warning => tracing::warn!(kind, "{message}"),
            Level::Critical => tracing::error!(kind, "{message}"),
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Ok(mut g) = self.0.lock() {
            g.0 += 1;
            let seq = g.0;
            g.1.push_back(Event {
                seq,
                time,
                level,
                kind,
                message,
            });
            if g.1.len() > KEEP {
                g.1.pop_front();
            }
        }
    }

    /// Events after sequence number `since`.
    pub fn since(&self, since: u64) -> Vec<Event> {
        self.0
            .lock()
            .map(|g| g.1.iter().filter(|e| e.seq > since).cloned().collect())
            .unwrap_or_default()
    }
}

/// What the monitor remembers between looks.
#[derive(Debug, Default)]
pub struct Watch {
    healthy: Vec<bool>,
    degraded: u64,
    band: u8,
}

impl Watch {
    /// Compares the engine's state with the last look and records what
    /// changed.
    pub fn look(&mut self, engine: &crate::engine::Engine, events: &Events) {
        let Ok(devs) = engine.devices() else { return };
        if self.healthy.len() != devs.len() {
            self.healthy = devs.iter().map(|d| d.healthy).collect();
            for d in devs.iter().filter(|d| !d.healthy) {
                events.push(
                    Level::Critical,
                    "device_failed",
                    format!("device {} ({}) is failed or missing", d.index, d.name),
                );
            }
        }
        for (d, was) in devs.iter().zip(self.healthy.iter_mut()) {
            if *was && !d.healthy {
                events.push(
                    Level::Critical,
                    "device_failed",
                    format!(
                        "device {} ({}) failed after {} errors; data is served degraded — \
                         replace it and run `flint scrub`",
                        d.index, d.name, d.errors
                    ),
                );
            }
            *was = d.healthy;
        }
        if let Ok(r) = engine.repairs() {
            if r.degraded_reads > self.degraded {
                events.push(
                    Level::Warning,
                    "degraded",
                    format!(
                        "{} reads rebuilt from parity since the last look ({} in all)",
                        r.degraded_reads - self.degraded,
                        r.degraded_reads
                    ),
                );
                self.degraded = r.degraded_reads;
            }
        }
        let cap: u64 = devs.iter().map(|d| d.capacity).sum();
        let free: u64 = devs.iter().map(|d| d.free).sum();
        if let Some(pct) = (free * 100).checked_div(cap) {
            let band = if pct < 10 {
                2
            } else if pct < 20 {
                1
            } else {
                0
            };
            if band > self.band {
                events.push(
                    if band == 2 {
                        Level::Critical
                    } else {
                        Level::Warning
                    },
                    "capacity",
                    format!("only {pct}% of device space is free; delete data or add devices"),
                );
            } else if band < self.band {
                events.push(
                    Level::Info,
                    "capacity",
                    format!("{pct}% of device space is free again"),
                );
            }
            self.band = band;
        }
    }
}
