//! The etcd schema: which keys hold what, and the records stored in them.
//!
//! Everything lives under one prefix (default [`DEFAULT_PREFIX`]):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `workers/<addr>` | [`WorkerRecord`] as JSON | the worker's own |
//! | `functions/<name>` | the gateway's registration, an opaque string (JSON by convention) | none |
//! | `seeds/<function>/<host addr>` | [`SeedRecord`] as JSON | the lease of worker `<host addr>` |
//!
//! A seed shares its host's lease so that a dead worker's seeds vanish with
//! it, in the same etcd transaction that removes the worker.

use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// The prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "/mitosis/";

/// A live worker: a host running `mitosis daemon`, reachable at `addr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The daemon's address for other daemons and gateways (`ip:port`).
    pub addr: String,
    /// The etcd lease the record (and the worker's seeds) live under.
    pub lease: i64,
}

/// A seed of `function` prepared on worker `host`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub function: String,
    /// The worker holding the seed (its `workers/<addr>` address).
    pub host: String,
    /// The seed's id on that worker's daemon.
    pub seed_id: String,
    /// Bumped by whoever re-prepares the seed, so that readers can tell an
    /// old seed from its replacement.
    pub generation: u64,
}

/// One key of the schema, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Worker(&'a str),
    Function(&'a str),
    Seed { function: &'a str, host: &'a str },
}

/// The keys of one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Schema {
    prefix: String,
}

impl Schema {
    /// `prefix` gets a trailing `/` if it has none, so that `/a` never
    /// also matches `/ab/...`.
    pub(crate) fn new(prefix: &str) -> Result<Schema, ClusterError> {
        if prefix.is_empty() {
            return Err(ClusterError::InvalidName { what: "prefix", name: prefix.into() });
        }
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Schema { prefix })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn worker(&self, addr: &str) -> Result<String, ClusterError> {
        check_segment("worker address", addr)?;
        Ok(format!("{}workers/{addr}", self.prefix))
    }

    pub(crate) fn function(&self, name: &str) -> Result<String, ClusterError> {
        check_segment("function name", name)?;
        Ok(format!("{}functions/{name}", self.prefix))
    }

    pub(crate) fn seed(&self, function: &str, host: &str) -> Result<String, ClusterError> {
        check_segment("function name", function)?;
        check_segment("seed host address", host)?;
        Ok(format!("{}seeds/{function}/{host}", self.prefix))
    }

    /// What `key` is, or `None` for keys under the prefix that are not ours
    /// (left alone, so that other tools may share the prefix).
    pub(crate) fn parse<'a>(&self, key: &'a str) -> Option<Key<'a>> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (kind, rest) = rest.split_once('/')?;
        let one = |s: &'a str| (!s.is_empty() && !s.contains('/')).then_some(s);
        match kind {
            "workers" => one(rest).map(Key::Worker),
            "functions" => one(rest).map(Key::Function),
            "seeds" => {
                let (function, host) = rest.split_once('/')?;
                Some(Key::Seed { function: one(function)?, host: one(host)? })
            }
            _ => None,
        }
    }
}

/// Names become key segments: a `/` in one would make the key ambiguous.
fn check_segment(what: &'static str, name: &str) -> Result<(), ClusterError> {
    if name.is_empty() || name.contains('/') {
        return Err(ClusterError::InvalidName { what, name: name.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let s = Schema::new("/m").unwrap();
        assert_eq!(s.prefix(), "/m/");
        let w = s.worker("10.0.0.1:7070").unwrap();
        assert_eq!(w, "/m/workers/10.0.0.1:7070");
        assert_eq!(s.parse(&w), Some(Key::Worker("10.0.0.1:7070")));
        let f = s.function("resize").unwrap();
        assert_eq!(s.parse(&f), Some(Key::Function("resize")));
        let k = s.seed("resize", "10.0.0.1:7070").unwrap();
        assert_eq!(k, "/m/seeds/resize/10.0.0.1:7070");
        assert_eq!(s.parse(&k), Some(Key::Seed { function: "resize", host: "10.0.0.1:7070" }));
    }

    #[test]
    fn foreign_and_malformed_keys_are_ignored() {
        let s = Schema::new("/m/").unwrap();
        assert_eq!(s.parse("/mm/workers/a"), None);
        assert_eq!(s.parse("/m/other/a"), None);
        assert_eq!(s.parse("/m/workers/"), None);
        assert_eq!(s.parse("/m/workers/a/b"), None);
        assert_eq!(s.parse("/m/seeds/f"), None);
        assert_eq!(s.parse("/m/seeds/f/h/x"), None);
    }

    #[test]
    fn slashes_in_names_are_refused() {
        let s = Schema::new("/m/").unwrap();
        assert!(s.function("a/b").is_err());
        assert!(s.worker("").is_err());
        assert!(s.seed("f", "h/x").is_err());
        assert!(Schema::new("").is_err());
    }
}
