//! A Python interpreter that user `nobody` can run, with the repo venv's
//! packages: function instances run as `nobody`, in lean containers that
//! have a /tmp of their own.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An interpreter for instances, and what keeps it reachable.
#[derive(Debug)]
pub struct NobodyPython {
    pub python: PathBuf,
    /// The venv's packages bound read-only outside /tmp, when the repo is
    /// under /tmp (a container would not see them there); unmounted on drop.
    _packages: Option<ReadOnlyBind>,
}

/// A read-only bind mount in this (the root) mount namespace, undone on
/// drop. Containers created while it exists see it too. Read-only, so that
/// removing the directory it sits in can never delete what it shows.
#[derive(Debug)]
pub struct ReadOnlyBind {
    target: CString,
}

impl ReadOnlyBind {
    pub fn new(source: &Path, target: &Path) -> Result<ReadOnlyBind, String> {
        std::fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} holds a NUL", p.display()));
        let (src, tgt) = (c(source)?, c(target)?);
        mitosis_sys::ns::mount(Some(&src), &tgt, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(|e| format!("binding {} at {}: {e}", source.display(), target.display()))?;
        let bind = ReadOnlyBind { target: tgt };
        mitosis_sys::ns::mount(None, &bind.target, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, None)
            .map_err(|e| format!("making {} read-only: {e}", target.display()))?;
        Ok(bind)
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = mitosis_sys::ns::umount(&self.target, libc::MNT_DETACH);
    }
}

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

/// An interpreter nobody can run, inside a container too, with the packages
/// of the venv `venv`: the venv's own, or (when it lives where nobody cannot
/// go, as a pyenv build under /root does, or under /tmp, which a container
/// has of its own) a small venv made in `scratch` on the system's
/// interpreter of the same version, reading `venv`'s site-packages (bound
/// read-only into `scratch` when they are under /tmp). `scratch` must not be
/// under /tmp. The error says why there is none.
pub fn python_for_nobody(venv: &Path, scratch: &Path) -> Result<NobodyPython, String> {
    let python = venv.join("bin/python");
    if !python.exists() {
        return Err(format!("no venv at {} (run scripts/setup-python)", venv.display()));
    }
    let under_tmp = venv.starts_with("/tmp");
    if !under_tmp && nobody_runs(&python) {
        return Ok(NobodyPython { python, _packages: None });
    }
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap_or_default();
    let version = cfg.lines().find_map(|l| l.strip_prefix("version")).map(|v| v.trim_start_matches([' ', '=']).trim().to_string());
    let minor = version.as_deref().and_then(|v| v.rsplit_once('.')).map(|(mm, _)| mm.to_string()).unwrap_or_default();
    let system = PathBuf::from(format!("/usr/bin/python{minor}"));
    let site = venv.join(format!("lib/python{minor}/site-packages"));
    if !minor.is_empty() && system.exists() && site.is_dir() {
        let packages = if under_tmp { Some(ReadOnlyBind::new(&site, &scratch.join("repo-site-packages"))?) } else { None };
        let site = if under_tmp { scratch.join("repo-site-packages") } else { site };
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
            return Ok(NobodyPython { python: shim_python, _packages: packages });
        }
    }
    Err(format!("user nobody cannot run {} with the mitosis package", python.display()))
}
