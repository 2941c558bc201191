//! A small `--key value` argument parser: benchmarks need no more.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Parsed arguments: `--key value` pairs and `--flag`s.
pub struct Args {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
    known: Vec<&'static str>,
}

impl Args {
    /// Parses `argv` (without the program and subcommand). `flags` lists the
    /// keys that take no value.
    pub fn parse(argv: &[String], flags: &[&str]) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut seen_flags = Vec::new();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!(
                    "unexpected argument `{a}`; options look like --key value"
                ));
            };
            if let Some((k, v)) = key.split_once('=') {
                values.insert(k.to_string(), v.to_string());
            } else if flags.contains(&key) {
                seen_flags.push(key.to_string());
            } else {
                let v = it
                    .next()
                    .ok_or_else(|| format!("option --{key} needs a value"))?;
                values.insert(key.to_string(), v.clone());
            }
        }
        Ok(Args {
            values,
            flags: seen_flags,
            known: Vec::new(),
        })
    }

    /// A typed value with a default.
    pub fn get<T: FromStr>(&mut self, key: &'static str, default: T) -> Result<T, String> {
        self.known.push(key);
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: `{v}` is not a valid value")),
        }
    }

    /// Whether a flag was given.
    pub fn flag(&mut self, key: &'static str) -> bool {
        self.known.push(key);
        self.flags.iter().any(|f| f == key)
    }

    /// Fails on any option that was not asked for.
    pub fn finish(&self) -> Result<(), String> {
        for k in self.values.keys().chain(self.flags.iter()) {
            if !self.known.contains(&k.as_str()) {
                return Err(format!("unknown option --{k}; see flint-bench help"));
            }
        }
        Ok(())
    }
}
