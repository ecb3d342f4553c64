//! A Python interpreter that user `nobody` can run, with the repo venv's
//! packages: function instances run as `nobody`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether user nobody can run `python` and import the mitosis runtime (a
/// real `execve`, as a worker daemon's).
pub fn nobody_runs(python: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", r#"exec "$0" -c "import mitosis.runtime""#])
        .arg(python)
        .env_clear()
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An interpreter nobody can run with the packages of the venv `venv`: the
/// venv's own, or (when it lives where nobody cannot go, as a pyenv build
/// under /root does) a small venv made in `scratch` on the system's
/// interpreter of the same version, reading `venv`'s site-packages.
/// `scratch` must not be under /tmp (a container has a /tmp of its own).
/// The error says why there is none.
pub fn python_for_nobody(venv: &Path, scratch: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    if !python.exists() {
        return Err(format!("no venv at {} (run scripts/setup-python)", venv.display()));
    }
    if nobody_runs(&python) {
        return Ok(python);
    }
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap_or_default();
    let version = cfg.lines().find_map(|l| l.strip_prefix("version")).map(|v| v.trim_start_matches([' ', '=']).trim().to_string());
    let minor = version.as_deref().and_then(|v| v.rsplit_once('.')).map(|(mm, _)| mm.to_string()).unwrap_or_default();
    let system = PathBuf::from(format!("/usr/bin/python{minor}"));
    let site = venv.join(format!("lib/python{minor}/site-packages"));
    if !minor.is_empty() && system.exists() && site.is_dir() {
        let shim = scratch.join("venv");
        let shim_site = shim.join(format!("lib/python{minor}/site-packages"));
        let made = std::fs::create_dir_all(shim.join("bin"))
            .and_then(|()| std::fs::create_dir_all(&shim_site))
            .and_then(|()| std::os::unix::fs::symlink(&system, shim.join("bin/python")))
            .and_then(|()| std::fs::write(shim.join("pyvenv.cfg"), "home = /usr/bin\ninclude-system-site-packages = false\n"))
            .and_then(|()| std::fs::write(shim_site.join("mitosis-repo-venv.pth"), format!("{}\n", site.display())));
        if let Err(e) = made {
            return Err(format!("cannot make a venv for nobody in {}: {e}", shim.display()));
        }
        let shim_python = shim.join("bin/python");
        if nobody_runs(&shim_python) {
            return Ok(shim_python);
        }
    }
    Err(format!("user nobody cannot run {} with the mitosis package", python.display()))
}
