//! The cluster key this daemon uses for peer connections, swapped in place
//! when the key file is rotated (SIGHUP), and the record protection it requires.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mitosis_proto::auth::ClusterKey;
use mitosis_proto::secure::Protection;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {why}")]
    Invalid { path: PathBuf, why: &'static str },
}

/// The key in force and where it came from. Clones share the key: every
/// connection made after [`WireKey::reload`] uses the new one (connections
/// already open keep the session keys of their handshake).
#[derive(Debug, Clone)]
pub struct WireKey {
    current: Arc<RwLock<ClusterKey>>,
    path: Option<PathBuf>,
    protection: Protection,
}

impl WireKey {
    /// A fixed key (no file to reload).
    pub fn new(key: ClusterKey, protection: Protection) -> WireKey {
        WireKey { current: Arc::new(RwLock::new(key)), path: None, protection }
    }

    /// The key in `path`, which [`WireKey::reload`] reads again.
    pub fn from_file(path: &Path, protection: Protection) -> Result<WireKey, KeyFileError> {
        let key = read_key(path)?;
        Ok(WireKey { current: Arc::new(RwLock::new(key)), path: Some(path.to_path_buf()), protection })
    }

    /// The key to use for a new connection.
    pub fn current(&self) -> ClusterKey {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The protection both ends of a connection must use.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Reads the key file again and uses its key from now on. A file that
    /// cannot be read or holds no valid key changes nothing.
    pub fn reload(&self) -> Result<(), KeyFileError> {
        let Some(path) = &self.path else { return Ok(()) };
        let key = read_key(path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

fn read_key(path: &Path) -> Result<ClusterKey, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read { path: path.to_path_buf(), source })?;
    ClusterKey::from_file_contents(&bytes).map_err(|why| KeyFileError::Invalid { path: path.to_path_buf(), why })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `a` and `b` complete a handshake with each other.
    fn agree(a: &ClusterKey, b: &ClusterKey) -> bool {
        let (mut x, mut y) = std::os::unix::net::UnixStream::pair().unwrap();
        let b = b.clone();
        let server = std::thread::spawn(move || mitosis_proto::auth::server_handshake(&mut y, &b, Protection::Encrypted).is_ok());
        let client = mitosis_proto::auth::client_handshake(&mut x, a, Protection::Encrypted).is_ok();
        drop(x);
        client && server.join().unwrap()
    }

    #[test]
    fn reload_takes_a_new_key_and_keeps_the_old_one_on_a_bad_file() {
        let path = std::env::temp_dir().join(format!("mitosis-wirekey-test-{}", std::process::id()));
        let key = |s: &str| ClusterKey::from_file_contents(s.as_bytes()).unwrap();
        std::fs::write(&path, "first-cluster-key-0123456789\n").unwrap();
        let wk = WireKey::from_file(&path, Protection::Encrypted).unwrap();
        let shared = wk.clone();
        assert!(agree(&shared.current(), &key("first-cluster-key-0123456789")));

        std::fs::write(&path, "short").unwrap();
        assert!(matches!(wk.reload(), Err(KeyFileError::Invalid { .. })));
        assert!(agree(&shared.current(), &key("first-cluster-key-0123456789")), "a bad file changes nothing");

        std::fs::write(&path, "second-cluster-key-0123456789").unwrap();
        wk.reload().unwrap();
        assert!(agree(&shared.current(), &key("second-cluster-key-0123456789")), "clones see the new key");
        assert!(!agree(&shared.current(), &key("first-cluster-key-0123456789")));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(wk.reload(), Err(KeyFileError::Read { .. })));
        assert!(agree(&shared.current(), &key("second-cluster-key-0123456789")));
    }
}
