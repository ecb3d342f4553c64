//! Taking over a running unprivileged process's memory from outside
//! (`Frozen::adopt_userfaultfd`): the daemon gets a working userfaultfd for
//! it, and the process is left as it was (no descriptor, no mapping of the
//! takeover's own), going on where it was.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use mitosis_capture::freeze::Frozen;
use mitosis_sys::uffd::{self, Uffd};
use mitosis_sys::vdso::VdsoInfo;

/// `nobody`: the takeover must not need the process's own privilege.
const NOBODY: u32 = 65534;

fn entries(pid: u32, what: &str) -> Vec<String> {
    match what {
        "fd" => std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        _ => std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap().lines().map(str::to_string).collect(),
    }
}

#[test]
fn an_unprivileged_process_is_adopted_and_left_as_it_was() {
    if !mitosis_testkit::require_root() {
        return;
    }
    // Blocked in read(2) on its stdin, as an instance's runtime waits for a call.
    let mut child = Command::new("/bin/sh")
        .args(["-c", "read line; echo \"got $line\""])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Until it reads (its maps settle once the shell waits).
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (fds_before, maps_before) = (entries(pid, "fd"), entries(pid, "maps"));
    let process = mitosis_sys::pidfd::open(i32::try_from(pid).unwrap()).unwrap();
    let device = uffd::open_device().unwrap();
    let vdso = VdsoInfo::of_self().unwrap();
    let frozen = Frozen::freeze(i32::try_from(pid).unwrap(), &vdso).unwrap();
    let adopted = frozen.adopt_userfaultfd(&process, &device);
    assert_eq!(entries(pid, "fd"), fds_before, "no descriptor of the takeover is left in the process");
    assert_eq!(entries(pid, "maps"), maps_before, "nor its scratch page");
    frozen.thaw().unwrap();
    let uffd = Uffd::from_fd(adopted.expect("a userfaultfd for the process's memory"));
    uffd.api(uffd::features::EVENT_REMOVE).expect("it is a userfaultfd");
    // It is for the process's memory: its heap registers (ours has no such range).
    let heap = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let heap = mitosis_sys::procfs::parse_maps(&heap).unwrap().into_iter().find(|m| m.name == "[heap]").expect("the shell has a heap");
    uffd.register_missing(heap.start, heap.end - heap.start).expect("registering the process's heap");
    drop(uffd);
    child.stdin.take().unwrap().write_all(b"on\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got on\n", "the thawed process goes on reading");
}
