//! The dataplane part of a node's config file: `[reactor]`, `[memory]` and
//! `[[device]]` tables. Unknown keys are rejected with their name.

use serde::Deserialize;
use std::path::Path;

use crate::bdev::DeviceSpec;
use crate::error::{Error, Result};
use crate::mempool::HugePages;
use crate::reactor::ReactorConfig;

/// DMA memory settings (`[memory]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// `auto` (use reserved hugepages if any), `off`, or `require`.
    #[serde(default)]
    pub hugepages: HugePages,
}

/// The dataplane's share of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DataplaneConfig {
    /// Reactor settings.
    #[serde(default)]
    pub reactor: ReactorConfig,
    /// DMA memory settings.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Devices, in order.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceSpec>,
}

impl DataplaneConfig {
    /// Parses TOML text. Tables other than the dataplane's are left to their
    /// owners; inside the dataplane's tables unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: DataplaneConfig = toml::from_str(text).map_err(|e| Error::Config {
            key: e
                .span()
                .map(|s| text[s].lines().next().unwrap_or("").to_string())
                .unwrap_or_default(),
            reason: e.message().to_string(),
        })?;
        let mut names: Vec<&str> = Vec::new();
        for d in &cfg.devices {
            if names.contains(&d.name.as_str()) {
                return Err(Error::Config {
                    key: format!("device.{}.name", d.name),
                    reason: "two devices have this name; names must be unique".into(),
                });
            }
            names.push(&d.name);
        }
        Ok(cfg)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Os {
            op: "read config file",
            source,
        })?;
        Self::from_toml(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                DataplaneConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n > 0);
    }

    #[test]
    fn unknown_keys_and_duplicate_names_are_refused() {
        let err = DataplaneConfig::from_toml("[reactor]\npoll = \"busy\"\n").unwrap_err();
        assert!(err.to_string().contains("poll"), "{err}");
        let err = DataplaneConfig::from_toml("[memory]\nhugepages = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        let two = "[[device]]\nname=\"a\"\nbackend=\"null\"\nsize=4096\n".repeat(2);
        let err = DataplaneConfig::from_toml(&two).unwrap_err();
        assert!(err.to_string().contains("device.a.name"), "{err}");
    }
}
