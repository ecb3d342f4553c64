//! What a registered function is: its directory, limits and start policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mitosis_proto::instance::OffloadPolicy;
use serde::{Deserialize, Serialize};

/// How a function's new instances start when no idle one is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// A remote fork of the function's seed onto the least loaded worker.
    /// The first instance is a cold start that prepares itself as the seed
    /// once its initialisation is done, and serves requests as well.
    #[default]
    Fork,
    /// Every new instance is a cold start (the baseline: OpenWhisk, FaaSMem).
    Cold,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Fork => "fork",
            Policy::Cold => "cold",
        })
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "fork" => Ok(Policy::Fork),
            "cold" => Ok(Policy::Cold),
            _ => Err(format!("unknown start policy {s:?} (fork or cold)")),
        }
    }
}

/// Most instances of one function, unless its registration says otherwise (FaaSMem's 16).
pub const DEFAULT_MAX_INSTANCES: u32 = 16;
/// How long an idle instance is kept (FaaSMem's 600 s).
pub const DEFAULT_KEEP_ALIVE_S: u64 = 600;
pub const DEFAULT_TIMEOUT_S: u64 = 60;
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// Limits of a registration.
pub const MAX_MAX_INSTANCES: u32 = 1024;
pub const MAX_TIMEOUT_S: u64 = 3600;

/// A function as registered (`PUT /functions/{name}`, or a config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Absolute path of the function's directory (holding `function.py`), the same on every worker.
    pub dir: String,
    /// Memory limit of each instance's container, MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    #[serde(default = "default_max")]
    pub max_instances: u32,
    /// Seconds an idle instance is kept; 0 ends each instance after its request.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Seconds a request may take, its handler's run and any wait for an instance included.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// `None`: the gateway's default (`--policy`).
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Seconds (at least) after which an idle instance's memory is
    /// offloaded; `None`: the worker's default (`mitosis daemon
    /// --offload-idle-after`).
    #[serde(default)]
    pub offload_idle_s: Option<u64>,
    /// How it is offloaded (`mitosis`, `faasmem` or `whole`).
    #[serde(default)]
    pub offload_policy: OffloadPolicy,
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY_MB
}
fn default_max() -> u32 {
    DEFAULT_MAX_INSTANCES
}
fn default_keep_alive() -> u64 {
    DEFAULT_KEEP_ALIVE_S
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_S
}

impl FunctionConfig {
    /// A function in `dir` with every default.
    pub fn new(dir: impl Into<String>) -> FunctionConfig {
        FunctionConfig {
            dir: dir.into(),
            memory_mb: DEFAULT_MEMORY_MB,
            max_instances: DEFAULT_MAX_INSTANCES,
            keep_alive_s: DEFAULT_KEEP_ALIVE_S,
            timeout_s: DEFAULT_TIMEOUT_S,
            policy: None,
            offload_idle_s: None,
            offload_policy: OffloadPolicy::default(),
        }
    }

    /// [`FunctionConfig::offload_idle_s`] in milliseconds.
    pub fn offload_idle_ms(&self) -> Option<u64> {
        self.offload_idle_s.map(|s| s.saturating_mul(1000))
    }

    /// Checks a registration; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !self.dir.starts_with('/') || self.dir.contains('\0') || self.dir.len() > mitosis_proto::instance::MAX_PATH {
            return Err(format!("dir {:?} must be an absolute path (the function's directory on every worker)", self.dir));
        }
        if !(8..=1 << 20).contains(&self.memory_mb) {
            return Err(format!("memory_mb {} must be between 8 and 1048576", self.memory_mb));
        }
        if !(1..=MAX_MAX_INSTANCES).contains(&self.max_instances) {
            return Err(format!("max_instances {} must be between 1 and {MAX_MAX_INSTANCES}", self.max_instances));
        }
        if !(1..=MAX_TIMEOUT_S).contains(&self.timeout_s) {
            return Err(format!("timeout_s {} must be between 1 and {MAX_TIMEOUT_S}", self.timeout_s));
        }
        if self.offload_idle_s == Some(0) {
            return Err("offload_idle_s must be at least 1".into());
        }
        Ok(())
    }

    /// A short digest of the registration (FNV-1a of its JSON): equal
    /// registrations have equal tags on every gateway of one build.
    pub fn tag(&self) -> String {
        let json = serde_json::to_string(self).expect("a FunctionConfig is plain data and always serializes");
        let hash = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        format!("{hash:016x}")
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_s)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb << 20
    }
}

/// Checks a function's name: it appears in URLs, seed ids and metrics labels.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a function name must be 1 to 64 bytes".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        return Err(format!("function name {name:?} may hold only letters, digits, '-' and '_'"));
    }
    Ok(())
}

/// A functions file (`--config`):
/// ```toml
/// [functions.helloworld]
/// dir = "/srv/functions/helloworld"
/// memory_mb = 256
/// keep_alive_s = 600
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionsFile {
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
}

/// Why a functions file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid functions file: {message}")]
    Invalid { path: String, message: String },
}

impl FunctionsFile {
    pub fn load(path: &Path) -> Result<FunctionsFile, ConfigFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: shown.clone(), source })?;
        let file: FunctionsFile =
            toml::from_str(&text).map_err(|e| ConfigFileError::Invalid { path: shown.clone(), message: e.to_string() })?;
        for (name, f) in &file.functions {
            validate_name(name)
                .and_then(|()| f.validate())
                .map_err(|message| ConfigFileError::Invalid { path: shown.clone(), message: format!("function {name}: {message}") })?;
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked() {
        assert!(FunctionConfig::new("/srv/f").validate().is_ok());
        assert!(FunctionConfig::new("srv/f").validate().is_err());
        let mut f = FunctionConfig::new("/srv/f");
        f.max_instances = 0;
        assert!(f.validate().is_err());
        let mut f = FunctionConfig::new("/srv/f");
        f.timeout_s = 0;
        assert!(f.validate().is_err());
        assert!(validate_name("hello-world_2").is_ok());
        assert!(validate_name("../x").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn registrations_parse_with_defaults_and_refuse_unknown_fields() {
        let f: FunctionConfig = serde_json::from_str(r#"{"dir": "/a", "keep_alive_s": 0, "policy": "cold"}"#).unwrap();
        assert_eq!(f.keep_alive_s, 0);
        assert_eq!(f.policy, Some(Policy::Cold));
        assert_eq!(f.max_instances, DEFAULT_MAX_INSTANCES);
        assert!(serde_json::from_str::<FunctionConfig>(r#"{"dir": "/a", "memroy_mb": 5}"#).is_err());
        assert!(serde_json::from_str::<FunctionConfig>(r#"{"dir": "/a", "policy": "warm"}"#).is_err());
    }

    #[test]
    fn functions_files_load() {
        let dir = std::env::temp_dir().join(format!("mitosis-fnfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("functions.toml");
        std::fs::write(&path, "[functions.hello]\ndir = \"/srv/hello\"\nmemory_mb = 128\n").unwrap();
        let file = FunctionsFile::load(&path).unwrap();
        assert_eq!(file.functions["hello"].memory_mb, 128);
        std::fs::write(&path, "[functions.hello]\ndir = \"relative\"\n").unwrap();
        assert!(FunctionsFile::load(&path).unwrap_err().to_string().contains("absolute"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
