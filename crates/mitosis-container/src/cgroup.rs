//! The cgroups of containers: one directory per controller (memory, cpu,
//! pids), under the daemon's own cgroup, on cgroup v1 hierarchies where the
//! host has them and on the unified (v2) hierarchy otherwise.
//!
//! Layout: `<mount>/<daemon's cgroup>/mitosis-<daemon pid>/<container>`. A
//! daemon removes its whole subtree when it stops, so containers never
//! outlive it in the cgroup tree either. A daemon that was killed (SIGKILL,
//! OOM) cannot: the next daemon started in the same cgroup sweeps the
//! subtrees of dead daemons beside its own ([`Cgroups::sweep_dead_daemons`]).
//!
//! A daemon whose mount namespace lacks a hierarchy that its process belongs
//! to (`ip netns exec` mounts a fresh /sys, hiding /sys/fs/cgroup) mounts it
//! itself under `/run/mitosis/cgroup/`, with the same controllers, which
//! attaches the very same hierarchy.
//!
//! Moving a task into a cgroup (the write to `cgroup.procs`) waits for an
//! RCU grace period, about 9 ms on these machines, unless the kernel is told
//! to favor dynamic modifications. The daemon sets `favordynmods` on the
//! unified hierarchy (it applies to task migrations in every hierarchy,
//! v1 included), keeping that mount's other options: migrations then cost
//! tens of microseconds, forks and exits host-wide a little more.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mitosis_proto::local::ContainerLimits;

/// The controllers containers are limited by, and where their memory
/// pressure is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
    /// Not a controller: the unified (v2) hierarchy's `memory.pressure`
    /// (PSI), which every v2 cgroup has, controllers or not. Cgroup v1 has
    /// no per-cgroup pressure, so a container that needs it
    /// ([`ContainerCgroup::join_pressure`]) is also put in a v2 cgroup of
    /// its own, made then.
    Pressure,
}

impl Controller {
    const ALL: [Controller; 4] = [Controller::Memory, Controller::Cpu, Controller::Pids, Controller::Pressure];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
            Controller::Pressure => "pressure",
        }
    }
}

/// Where one controller lives.
#[derive(Debug, Clone)]
struct Hierarchy {
    controller: Controller,
    /// The daemon's subtree: `<mount>/<own cgroup>/mitosis-<pid>`.
    base: PathBuf,
    v2: bool,
}

/// The daemon's cgroup subtrees, one per available controller.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
}

/// One container's cgroup directories.
#[derive(Debug)]
pub struct ContainerCgroup {
    dirs: Vec<(Controller, PathBuf, bool)>,
    /// Controllers with a limit set: a child joins these and the memory
    /// controller (for its accounting and OOM reports), not the others
    /// (each join costs tens of microseconds and would limit nothing).
    limited: Vec<Controller>,
}

/// Parses `/proc/self/mountinfo` for cgroup mounts: (mount point, is v2,
/// super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<(PathBuf, bool, Vec<String>)> {
    cgroup_mounts_with_flags(mountinfo).into_iter().map(|(p, v2, opts, _)| (p, v2, opts)).collect()
}

/// [`cgroup_mounts`], with each mount's per-mount options too.
fn cgroup_mounts_with_flags(mountinfo: &str) -> Vec<(PathBuf, bool, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let v2 = match rfields[0] {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        let opts = rfields[2].split(',').map(str::to_string).collect();
        let mount_opts = fields[5].split(',').map(str::to_string).collect();
        out.push((PathBuf::from(fields[4]), v2, opts, mount_opts));
    }
    out
}

/// The process's own path in each hierarchy, from `/proc/self/cgroup`:
/// (controllers, path); v2's line has empty controllers.
fn own_paths(proc_cgroup: &str) -> Vec<(Vec<String>, String)> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            Some((ctrls.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect(), path.to_string()))
        })
        .collect()
}

impl Cgroups {
    /// Finds memory, cpu and pids and creates the daemon's subtree in each.
    /// Controllers the host lacks are left out (and reported by `missing`).
    pub fn discover(daemon_pid: u32) -> io::Result<Cgroups> {
        let own = own_paths(&fs::read_to_string("/proc/self/cgroup")?);
        let mut mounts = cgroup_mounts(&fs::read_to_string("/proc/self/mountinfo")?);
        for (ctrls, _) in &own {
            let v2 = ctrls.is_empty();
            let present = mounts.iter().any(|(_, mv2, opts)| {
                *mv2 == v2 && (v2 || ctrls.iter().all(|c| opts.contains(c)))
            });
            // name=systemd and the like carry no controller we use.
            let useful = v2 || ctrls.iter().any(|c| Controller::ALL.iter().any(|u| u.name() == c));
            if !present && useful {
                match mount_hierarchy(ctrls) {
                    Ok(at) => mounts.push((at, v2, ctrls.clone())),
                    Err(e) => tracing::warn!(controllers = ?ctrls, error = %e, "cannot mount a cgroup hierarchy"),
                }
            }
        }
        if let Err(e) = favor_dynamic_modifications() {
            tracing::warn!(error = %e, "cannot set favordynmods: moving a child into its cgroups may take an RCU grace period (milliseconds)");
        }
        let mut hierarchies = Vec::new();
        for controller in Controller::ALL {
            let name = controller.name();
            let v1 = mounts.iter().find(|(_, v2, opts)| !v2 && opts.iter().any(|o| o == name));
            let found = match v1 {
                Some((mount, _, _)) => own
                    .iter()
                    .find(|(ctrls, _)| ctrls.iter().any(|c| c == name))
                    .map(|(_, path)| (mount.clone(), path.clone(), false)),
                None => mounts.iter().find(|(_, v2, _)| *v2).and_then(|(mount, _, _)| {
                    let path = own.iter().find(|(ctrls, _)| ctrls.is_empty())?.1.clone();
                    let dir = mount.join(path.trim_start_matches('/'));
                    let available = match controller {
                        Controller::Pressure => dir.join("memory.pressure").is_file(),
                        _ => fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default().split_whitespace().any(|c| c == name),
                    };
                    available.then(|| (mount.clone(), path, true))
                }),
            };
            let Some((mount, path, v2)) = found else { continue };
            let base = mount.join(path.trim_start_matches('/')).join(format!("mitosis-{daemon_pid}"));
            if v2 && hierarchies.iter().any(|h: &Hierarchy| h.v2) {
                // One unified directory serves every v2 controller.
                hierarchies.push(Hierarchy { controller, base, v2 });
                continue;
            }
            match fs::create_dir(&base) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", base.display()))),
            }
            if v2 && controller != Controller::Pressure {
                let _ = fs::write(base.join("cgroup.subtree_control"), format!("+{name}"));
            }
            if controller == Controller::Memory && !v2 {
                // Containers inherit it: none swaps its anonymous memory, with
                // or without swap on the host (a container over its limit is
                // OOM-killed, as without swap), unless it is let to
                // (`ContainerCgroup::allow_swap`).
                if let Err(e) = fs::write(base.join("memory.swappiness"), "0") {
                    tracing::warn!(error = %e, "cannot set memory.swappiness 0: containers may swap when the host has swap");
                }
            }
            hierarchies.push(Hierarchy { controller, base, v2 });
        }
        Ok(Cgroups { hierarchies })
    }

    /// Controllers that could not be found on this host.
    pub fn missing(&self) -> Vec<&'static str> {
        Controller::ALL
            .iter()
            .filter(|c| !self.hierarchies.iter().any(|h| h.controller == **c))
            .map(|c| c.name())
            .collect()
    }

    /// Creates the directories of container `name`.
    pub fn create(&self, name: &str) -> io::Result<ContainerCgroup> {
        let mut cg = ContainerCgroup { dirs: Vec::new(), limited: vec![Controller::Memory] };
        for h in &self.hierarchies {
            let dir = h.base.join(name);
            // Made when joined: most containers never are.
            if h.controller == Controller::Pressure && !cg.dirs.iter().any(|(_, d, _)| d == &dir) {
                cg.dirs.push((h.controller, dir, h.v2));
                continue;
            }
            if !cg.dirs.iter().any(|(_, d, _)| d == &dir) {
                if let Err(e) = fs::create_dir(&dir) {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())));
                    }
                }
            }
            cg.dirs.push((h.controller, dir, h.v2));
        }
        Ok(cg)
    }

    /// Removes the daemon's subtrees (containers' directories first).
    pub fn remove_all(&self) {
        for h in &self.hierarchies {
            if let Ok(entries) = fs::read_dir(&h.base) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = remove_dir_retrying(&e.path());
                    }
                }
            }
            let _ = remove_dir_retrying(&h.base);
        }
    }

    /// Removes the subtrees that daemons which are gone left beside this
    /// daemon's own: `mitosis-<pid>` directories, in the daemon's cgroup of
    /// each hierarchy, whose pid is not a live mitosis daemon (see
    /// `is_live_daemon`). Processes still inside (a dead daemon's holders
    /// and children die by `PR_SET_PDEATHSIG`, but a stray one may remain)
    /// are killed first; directories are removed children first.
    ///
    /// Several daemons share one cgroup (one per network namespace on a
    /// machine, as in the tests): a live daemon's subtree is never touched.
    /// Daemons that share a cgroup are assumed to share a PID namespace too
    /// (a subtree is named by its daemon's pid as that daemon sees it, and
    /// looked up in this daemon's /proc).
    pub fn sweep_dead_daemons(&self) -> Sweep {
        let own = std::process::id();
        let mut sweep = Sweep::default();
        let mut parents: Vec<&Path> = Vec::new();
        for h in &self.hierarchies {
            match h.base.parent() {
                Some(p) if !parents.contains(&p) => parents.push(p),
                _ => {}
            }
        }
        for parent in parents {
            let Ok(entries) = fs::read_dir(parent) else { continue };
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(daemon_pid_of_subtree) else { continue };
                if pid == own || !e.path().is_dir() || is_live_daemon(pid) {
                    continue;
                }
                remove_subtree(&e.path(), &mut sweep);
            }
        }
        sweep
    }

    /// The daemon's subtrees, one per hierarchy (v2 controllers share one):
    /// what [`remove_tree`] is to remove should the daemon die without
    /// removing them itself (its janitor does).
    pub fn subtrees(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for h in &self.hierarchies {
            if !out.contains(&h.base) {
                out.push(h.base.clone());
            }
        }
        out
    }

    /// Container directories that exist now: the most in any one hierarchy
    /// (each container has one in each), for leak checks.
    pub fn live_directories(&self) -> usize {
        self.hierarchies
            .iter()
            .map(|h| fs::read_dir(&h.base).map(|d| d.flatten().filter(|e| e.path().is_dir()).count()).unwrap_or(0))
            .max()
            .unwrap_or(0)
    }
}

/// What [`Cgroups::sweep_dead_daemons`] did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Directories removed, children before their parents.
    pub removed: Vec<PathBuf>,
    /// Processes that were still inside, killed (SIGKILL) before the removal.
    pub killed: Vec<i32>,
    /// Directories that could not be removed, and why.
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// The daemon pid of a subtree named `mitosis-<pid>` (container directories,
/// `mitosis-<pid>-<n>`, live one level further down).
fn daemon_pid_of_subtree(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("mitosis-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&p| p > 0)
}

/// Whether `pid` is a live `mitosis daemon` process, whose subtree must be
/// left alone. In doubt (its /proc files unreadable for another reason than
/// its absence) the answer is yes: a leaked directory is harmless, removing
/// a live daemon's would kill its children.
///
/// Pid reuse: a dead daemon's pid now held by another program, or by a
/// thread (`/proc/<tid>` exists too, hence the Tgid check), is not a daemon;
/// one held by another daemon is (conservatively) kept: a daemon started in
/// the same cgroup with that pid even takes the directory over as its own.
/// A zombie (a killed daemon not yet reaped) is dead.
fn is_live_daemon(pid: u32) -> bool {
    let status = match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => return false,
        Err(_) => return true,
    };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    if field("Tgid:").and_then(|t| t.parse::<u32>().ok()) != Some(pid) {
        return false;
    }
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return false;
    }
    let cmdline = match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => return false,
        Err(_) => return true,
    };
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    is_daemon_command_line(&cmdline, exe.as_deref())
}

/// `argv[0]` or the executable is named `mitosis…` and one argument is the
/// `daemon` subcommand. The daemon's zygote and janitor are forks with the
/// same command line; one found under a dead daemon's pid keeps that
/// subtree, which errs on the safe side.
fn is_daemon_command_line(cmdline: &[u8], exe: Option<&Path>) -> bool {
    let mut args = cmdline.split(|&b| b == 0);
    let argv0 = args.next().unwrap_or_default();
    let named_mitosis = |name: &[u8]| name.rsplit(|&b| b == b'/').next().is_some_and(|n| n.starts_with(b"mitosis"));
    let exe_named = exe.and_then(|e| e.file_name()).is_some_and(|n| n.to_string_lossy().starts_with("mitosis"));
    (named_mitosis(argv0) || exe_named) && args.any(|a| a == b"daemon")
}

/// Removes cgroup directory `dir` and everything below it, children first,
/// SIGKILLing the processes found in each directory first (see
/// `kill_members`): for a subtree whose daemon is gone.
pub fn remove_tree(dir: &Path) -> Sweep {
    let mut sweep = Sweep::default();
    if dir.is_dir() {
        remove_subtree(dir, &mut sweep);
    }
    sweep
}

/// Removes `dir` and everything below it, children first, killing the
/// processes found in each directory.
fn remove_subtree(dir: &Path, sweep: &mut Sweep) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_subtree(&e.path(), sweep);
            }
        }
    }
    kill_members(dir, sweep);
    match remove_dir_retrying(dir) {
        Ok(()) => sweep.removed.push(dir.to_path_buf()),
        Err(e) => sweep.failed.push((dir.to_path_buf(), e)),
    }
}

/// SIGKILLs the processes listed in `dir/cgroup.procs`. Each pid is pinned
/// by a pidfd and then seen in the list again, so that a pid reused by a
/// process outside the cgroup is never signalled.
fn kill_members(dir: &Path, sweep: &mut Sweep) {
    let procs = dir.join("cgroup.procs");
    let members = |text: &str| -> Vec<i32> { text.split_whitespace().filter_map(|p| p.parse().ok()).collect() };
    for pid in members(&fs::read_to_string(&procs).unwrap_or_default()) {
        let Ok(pidfd) = mitosis_sys::pidfd::open(pid) else { continue };
        if !members(&fs::read_to_string(&procs).unwrap_or_default()).contains(&pid) {
            continue;
        }
        if mitosis_sys::pidfd::send_signal(&pidfd, libc::SIGKILL).is_ok() {
            sweep.killed.push(pid);
        }
    }
}

/// Remounts the (first) unified hierarchy with `favordynmods` added to its
/// options, unless it has it already (see the module doc).
fn favor_dynamic_modifications() -> io::Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let Some((path, _, opts, mount_opts)) = cgroup_mounts_with_flags(&info).into_iter().find(|m| m.1) else {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"));
    };
    if opts.iter().any(|o| o == "favordynmods") {
        return Ok(());
    }
    let data: Vec<&str> = opts.iter().map(String::as_str).filter(|o| *o != "rw" && *o != "ro").chain(["favordynmods"]).collect();
    let mut flags = libc::MS_REMOUNT;
    for (name, flag) in [("nosuid", libc::MS_NOSUID), ("nodev", libc::MS_NODEV), ("noexec", libc::MS_NOEXEC), ("ro", libc::MS_RDONLY)] {
        if mount_opts.iter().any(|o| o == name) {
            flags |= flag;
        }
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (target, data_c) = (c(&path.to_string_lossy()), c(&data.join(",")));
    mitosis_sys::ns::mount(None, &target, None, flags, Some(&data_c)).map_err(|e| io::Error::from_raw_os_error(e.errno))?;
    tracing::info!(mount = %path.display(), "set favordynmods on the unified cgroup hierarchy (fast task migrations)");
    Ok(())
}

/// Mounts the hierarchy with controllers `ctrls` (empty: cgroup v2) under
/// `/run/mitosis/cgroup/`.
fn mount_hierarchy(ctrls: &[String]) -> io::Result<PathBuf> {
    let name = if ctrls.is_empty() { "unified".to_string() } else { ctrls.join(",") };
    let at = PathBuf::from("/run/mitosis/cgroup").join(&name);
    fs::create_dir_all(&at)?;
    let (fstype, data) = if ctrls.is_empty() { ("cgroup2", String::new()) } else { ("cgroup", name.clone()) };
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, target, fs_c, data_c) = (c(fstype), c(&at.to_string_lossy()), c(fstype), c(&data));
    let data_c = (!data.is_empty()).then_some(data_c.as_c_str());
    mitosis_sys::ns::mount(Some(&src), &target, Some(&fs_c), 0, data_c).map_err(|e| io::Error::from_raw_os_error(e.errno))?;
    Ok(at)
}

/// rmdir of a cgroup fails with EBUSY while its last task is still being
/// torn down; that takes a few milliseconds at most.
fn remove_dir_retrying(dir: &Path) -> io::Result<()> {
    for _ in 0..200 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir(dir)
}

/// The CFS period used for `--cpus` quotas.
const CPU_PERIOD_US: u64 = 100_000;

impl ContainerCgroup {
    /// Writes the limits; controllers without a limit stay unlimited.
    pub fn apply(&mut self, limits: &ContainerLimits) -> io::Result<()> {
        if limits.cpu_millis.is_some() {
            self.limited.push(Controller::Cpu);
        }
        if limits.pids.is_some() {
            self.limited.push(Controller::Pids);
        }
        for (controller, dir, v2) in &self.dirs {
            let (file, value) = match (controller, v2) {
                (Controller::Memory, false) => ("memory.limit_in_bytes", limits.memory_bytes.map(|b| b.to_string())),
                (Controller::Memory, true) => ("memory.max", limits.memory_bytes.map(|b| b.to_string())),
                (Controller::Cpu, false) => {
                    if limits.cpu_millis.is_some() {
                        write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    }
                    ("cpu.cfs_quota_us", limits.cpu_millis.map(|m| (CPU_PERIOD_US * m as u64 / 1000).max(1000).to_string()))
                }
                (Controller::Cpu, true) => (
                    "cpu.max",
                    limits.cpu_millis.map(|m| format!("{} {CPU_PERIOD_US}", (CPU_PERIOD_US * m as u64 / 1000).max(1000))),
                ),
                (Controller::Pids, _) => ("pids.max", limits.pids.map(|p| p.to_string())),
                (Controller::Pressure, _) => continue,
            };
            if let Some(value) = value {
                write(dir, file, &value)?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the directories of the memory controller and
    /// of the controllers with a limit.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        let mut done: Vec<&PathBuf> = Vec::new();
        for (controller, dir, _) in &self.dirs {
            if !self.limited.contains(controller) || done.contains(&dir) {
                continue;
            }
            write(dir, "cgroup.procs", &pid.to_string())?;
            done.push(dir);
        }
        Ok(())
    }

    fn dir_of(&self, c: Controller) -> Option<(&PathBuf, bool)> {
        self.dirs.iter().find(|(ctrl, _, _)| *ctrl == c).map(|(_, d, v2)| (d, *v2))
    }

    /// The `cgroup.procs` file listing every process in the container's
    /// memory cgroup: the child and all its descendants, which cannot leave
    /// it (killing them all needs only this file).
    pub fn procs_file(&self) -> Option<PathBuf> {
        self.dir_of(Controller::Memory).map(|(d, _)| d.join("cgroup.procs"))
    }

    /// Memory charged to the container now, in bytes.
    pub fn memory_usage(&self) -> Option<u64> {
        let (dir, v2) = self.dir_of(Controller::Memory)?;
        let file = if v2 { "memory.current" } else { "memory.usage_in_bytes" };
        fs::read_to_string(dir.join(file)).ok()?.trim().parse().ok()
    }

    /// How many processes the kernel's OOM killer killed in this container.
    pub fn oom_kills(&self) -> u64 {
        let Some((dir, v2)) = self.dir_of(Controller::Memory) else { return 0 };
        let file = if v2 { "memory.events" } else { "memory.oom_control" };
        fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Moves process `pid` into the container's own v2 cgroup (made now),
    /// where [`ContainerCgroup::memory_pressure`] reads its memory pressure.
    pub fn join_pressure(&self, pid: i32) -> io::Result<()> {
        let (dir, _) = self.dir_of(Controller::Pressure).ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "this host has no cgroup v2 hierarchy with memory.pressure (PSI)")
        })?;
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))),
        }
        write(dir, "cgroup.procs", &pid.to_string())
    }

    /// The share of the last 10 s in which some of the container's tasks
    /// stalled on memory, in percent (PSI's `some avg10`); `None` before
    /// [`ContainerCgroup::join_pressure`] or where there is no PSI.
    pub fn memory_pressure(&self) -> Option<f64> {
        let (dir, _) = self.dir_of(Controller::Pressure)?;
        parse_pressure_some_avg10(&fs::read_to_string(dir.join("memory.pressure")).ok()?)
    }

    /// Lets the kernel swap the container's anonymous memory out when it
    /// reclaims (the daemon's subtree sets `memory.swappiness` 0), as much as
    /// the host's own `vm.swappiness` says.
    pub fn allow_swap(&self) -> io::Result<()> {
        let (dir, v2) = self.dir_of(Controller::Memory).ok_or_else(|| io::Error::other("no memory cgroup"))?;
        if v2 {
            return Ok(());
        }
        let host = fs::read_to_string("/proc/sys/vm/swappiness").unwrap_or_else(|_| "60".into());
        write(dir, "memory.swappiness", host.trim())
    }

    /// Swap the container's memory takes, in bytes (cgroup v1's
    /// `memory.stat` `swap`, v2's `memory.swap.current`; 0 if not kept).
    pub fn swap_usage(&self) -> u64 {
        let Some((dir, v2)) = self.dir_of(Controller::Memory) else { return 0 };
        if v2 {
            return fs::read_to_string(dir.join("memory.swap.current")).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        }
        fs::read_to_string(dir.join("memory.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("swap ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Has the kernel reclaim about `bytes` of the container's memory now
    /// (to swap, as its swappiness allows, and clean file pages); returns
    /// how much its usage fell. Cgroup v2 has `memory.reclaim`; v1 has not,
    /// so its limit is set `bytes` under its usage, which makes the kernel
    /// reclaim down to it (or give up, `EBUSY`, which is not an error here),
    /// and set back at once: while it is lowered, the container's own
    /// allocations reclaim too.
    pub fn reclaim(&self, bytes: u64) -> io::Result<u64> {
        let (dir, v2) = self.dir_of(Controller::Memory).ok_or_else(|| io::Error::other("no memory cgroup"))?;
        let before = self.memory_usage().unwrap_or(0);
        if v2 {
            if let Err(e) = write(dir, "memory.reclaim", &bytes.to_string()) {
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    return Err(e);
                }
            }
        } else {
            let limit = fs::read_to_string(dir.join("memory.limit_in_bytes"))?.trim().to_string();
            let lowered = write(dir, "memory.limit_in_bytes", &before.saturating_sub(bytes).max(1 << 20).to_string());
            write(dir, "memory.limit_in_bytes", &limit)?;
            if let Err(e) = lowered {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(e);
                }
            }
        }
        Ok(before.saturating_sub(self.memory_usage().unwrap_or(before)))
    }

    /// Removes the directories (the container's processes must be gone).
    pub fn remove(&self) -> io::Result<()> {
        let mut result = Ok(());
        for (_, dir, _) in &self.dirs {
            if let Err(e) = remove_dir_retrying(dir) {
                result = Err(io::Error::new(e.kind(), format!("removing {}: {e}", dir.display())));
            }
        }
        result
    }
}

/// `some avg10` of a PSI file (`some avg10=1.23 avg60=... total=...`).
fn parse_pressure_some_avg10(text: &str) -> Option<f64> {
    let some = text.lines().find_map(|l| l.strip_prefix("some "))?;
    some.split_whitespace().find_map(|f| f.strip_prefix("avg10="))?.parse().ok()
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value).map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {}: {e}", dir.join(file).display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_mounts() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  23 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let m = cgroup_mounts(mi);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].0, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert!(!m[0].1 && m[0].2.contains(&"cpu".to_string()));
        assert!(m[2].1);
    }

    #[test]
    fn recognizes_daemon_subtrees_and_command_lines() {
        assert_eq!(daemon_pid_of_subtree("mitosis-4242"), Some(4242));
        for name in ["mitosis-", "mitosis-12-3", "mitosis-x", "other-12", "mitosis-0", "mitosis-+1"] {
            assert_eq!(daemon_pid_of_subtree(name), None, "{name}");
        }
        let exe = Path::new("/usr/bin/mitosis");
        assert!(is_daemon_command_line(b"/work/target/release/mitosis\0daemon\0--listen\0x\0", None));
        assert!(is_daemon_command_line(b"mitosis\0--log-level\0debug\0daemon\0", None));
        assert!(is_daemon_command_line(b"renamed\0daemon\0", Some(exe)));
        assert!(!is_daemon_command_line(b"/usr/bin/mitosis\0ls\0", Some(exe)));
        assert!(!is_daemon_command_line(b"sleep\0daemon\0", Some(Path::new("/usr/bin/sleep"))));
        assert!(!is_daemon_command_line(b"", None));
    }

    #[test]
    fn this_test_process_and_absent_pids_are_no_daemons() {
        assert!(!is_live_daemon(std::process::id()));
        assert!(!is_live_daemon(u32::MAX - 1));
    }

    #[test]
    fn parses_own_paths() {
        let own = own_paths("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x\n");
        assert_eq!(own[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(own[1].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(own[2], (vec![], "/x".to_string()));
    }

    #[test]
    fn subtrees_are_listed_once_per_directory() {
        let h = |controller, base: &str, v2| Hierarchy { controller, base: PathBuf::from(base), v2 };
        let cgroups = Cgroups {
            hierarchies: vec![
                h(Controller::Memory, "/sys/fs/cgroup/memory/x/mitosis-7", false),
                h(Controller::Cpu, "/sys/fs/cgroup/unified/x/mitosis-7", true),
                h(Controller::Pids, "/sys/fs/cgroup/unified/x/mitosis-7", true),
            ],
        };
        assert_eq!(cgroups.subtrees(), vec![PathBuf::from("/sys/fs/cgroup/memory/x/mitosis-7"), PathBuf::from("/sys/fs/cgroup/unified/x/mitosis-7")]);
    }

    #[test]
    fn remove_tree_removes_children_first_and_skips_what_is_gone() {
        // Plain directories stand in for cgroups (no `cgroup.procs`: nothing to kill).
        let base = std::env::temp_dir().join(format!("mitosis-remove-tree-{}", std::process::id()));
        fs::create_dir_all(base.join("mitosis-7-0")).unwrap();
        fs::create_dir_all(base.join("mitosis-7-plain-1/nested")).unwrap();
        let sweep = remove_tree(&base);
        assert!(!base.exists());
        assert!(sweep.failed.is_empty() && sweep.killed.is_empty(), "{:?}", sweep.failed);
        assert_eq!(sweep.removed.len(), 4);
        assert_eq!(sweep.removed.last(), Some(&base), "the subtree itself last");
        assert!(remove_tree(&base).removed.is_empty(), "already gone: nothing to do");
    }

    #[test]
    fn pressure_is_some_avg10() {
        let psi = "some avg10=1.25 avg60=0.50 avg300=0.00 total=1234\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=99\n";
        assert_eq!(parse_pressure_some_avg10(psi), Some(1.25));
        assert_eq!(parse_pressure_some_avg10("full avg10=0.75\n"), None);
        assert_eq!(parse_pressure_some_avg10(""), None);
    }
}
