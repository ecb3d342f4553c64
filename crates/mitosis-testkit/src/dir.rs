//! Per-test temporary directories and files in them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory `/tmp/mitosis-test-<pid>-<counter>-<name>` (or in
/// another parent, [`TestDir::new_in`]).
///
/// Removed on drop, unless the thread is panicking: then it is kept and its
/// path printed to stderr so logs and sockets can be inspected.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates the directory. Panics if it cannot (a test cannot go on).
    pub fn new(name: &str) -> TestDir {
        TestDir::new_in(Path::new("/tmp"), name)
    }

    /// [`TestDir::new`] in `parent` instead of /tmp: for files a process in
    /// a container must see (a container has a /tmp of its own).
    pub fn new_in(parent: &Path, name: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = name.replace('/', "_");
        let path = parent.join(format!(
            "mitosis-test-{}-{n}-{name}",
            std::process::id()
        ));
        // A leftover from a dead process that had our pid: start clean.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating test dir {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed; keeping {} for post-mortem",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `key` to `<dir>/<name>` with mode 0600 and returns the file's
/// path. Panics on I/O errors.
pub fn write_key(dir: &TestDir, name: &str, key: &str) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("creating key file {}: {e}", path.display()));
    // `mode` only applies to newly created files.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(key.as_bytes()))
        .unwrap_or_else(|e| panic!("writing key file {}: {e}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dir_is_unique_and_removed_on_drop() {
        let a = TestDir::new("unit");
        let b = TestDir::new("unit");
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        assert!(a
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("mitosis-test-{}-", std::process::id())));
        fs::write(a.path().join("f"), "x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn test_dir_is_kept_when_panicking() {
        let path = std::sync::Mutex::new(None);
        let r = std::panic::catch_unwind(|| {
            let d = TestDir::new("kept");
            *path.lock().unwrap() = Some(d.path().to_path_buf());
            panic!("boom");
        });
        assert!(r.is_err());
        let path = path.lock().unwrap().take().unwrap();
        assert!(path.is_dir());
        fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn key_file_has_mode_0600() {
        let d = TestDir::new("key");
        let p = write_key(&d, "key", "secret");
        assert_eq!(fs::read_to_string(&p).unwrap(), "secret");
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
