//! MITOSIS's third pass criterion, "a clean kernel log": what the kernel
//! logged while a stress program ran.
//!
//! [`KernelLog::mark`] opens `/dev/kmsg` at its end; [`KernelLog::since`]
//! reads every record logged after that and sorts out the ones that mean
//! trouble: a kernel bug, oops, warning or general protection fault (the
//! kernel itself went wrong, whatever caused it), and user-space crashes
//! (`segfault at`, `traps:`), which for a stress program's children would
//! mean a wrong page. An out-of-memory kill is logged too, as information: a
//! child at its `--memory` limit is killed by design.
//!
//! The kernel log is the machine's: a record from another program running
//! at the same time counts all the same, so a stress program reports what it
//! found, and the callers judge the kernel's own failures, not the rest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

use serde::Serialize;

/// Records that mean the kernel itself went wrong.
const KERNEL_FAILURES: &[&str] = &["BUG:", "Oops", "WARNING:", "general protection fault", "kernel BUG", "Kernel panic", "watchdog: "];
/// Records of a user-space process killed by a fault it took.
const CRASHES: &[&str] = &[" segfault at ", "traps: ", " general protection ip:"];
/// Records of the out-of-memory killer.
const OOM: &[&str] = &["invoked oom-killer", "Out of memory", "oom-kill:"];

/// A place in the kernel log.
pub struct KernelLog {
    kmsg: Option<File>,
    /// Why the log cannot be read (not root, no /dev/kmsg).
    unreadable: Option<String>,
}

/// What was logged since the mark.
#[derive(Serialize, Default, Debug, Clone)]
pub struct KernelLogReport {
    /// Could the log be read at all? (`false`: nothing below means anything.)
    pub readable: bool,
    pub records: u64,
    pub kernel_failures: Vec<String>,
    pub crashes: Vec<String>,
    pub oom: u64,
}

impl KernelLogReport {
    /// Whether the kernel itself logged a failure (bug, oops, warning).
    pub fn kernel_clean(&self) -> bool {
        self.kernel_failures.is_empty()
    }

    /// One line for a stress program's summary.
    pub fn summary(&self) -> String {
        if !self.readable {
            return "kernel log: not readable here (not judged)".into();
        }
        format!(
            "kernel log: {} new records, {} kernel failures, {} user-space crashes, {} out-of-memory records",
            self.records,
            self.kernel_failures.len(),
            self.crashes.len(),
            self.oom
        )
    }
}

impl KernelLog {
    /// Marks the log's end now.
    pub fn mark() -> KernelLog {
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg");
        match opened.and_then(|mut f| f.seek(SeekFrom::End(0)).map(|_| f)) {
            Ok(f) => KernelLog { kmsg: Some(f), unreadable: None },
            Err(e) => KernelLog { kmsg: None, unreadable: Some(format!("/dev/kmsg: {e}")) },
        }
    }

    /// Every record logged since the mark.
    pub fn since(&mut self) -> KernelLogReport {
        let Some(kmsg) = self.kmsg.as_mut() else {
            return KernelLogReport { readable: false, ..Default::default() };
        };
        let mut report = KernelLogReport { readable: true, ..Default::default() };
        // One record per read; EPIPE: records were overwritten before we
        // read them (the ring wrapped), the next read goes on from there.
        let mut buf = vec![0u8; 8192];
        loop {
            match kmsg.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => report.add(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break, // EAGAIN: nothing more
            }
        }
        report
    }

    /// Why the log cannot be read, if it cannot.
    pub fn unreadable(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }
}

impl KernelLogReport {
    /// Sorts one `/dev/kmsg` record (`prio,seq,usec,flags;text`, then
    /// continuation lines of key=value that are not the message).
    fn add(&mut self, record: &str) {
        self.records += 1;
        let text = record.split_once(';').map_or(record, |(_, t)| t).lines().next().unwrap_or("").trim_end();
        if KERNEL_FAILURES.iter().any(|k| text.contains(k)) {
            self.kernel_failures.push(text.to_string());
        } else if CRASHES.iter().any(|k| text.contains(k)) {
            self.crashes.push(text.to_string());
        } else if OOM.iter().any(|k| text.contains(k)) {
            self.oom += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sorted_by_what_they_mean() {
        let mut r = KernelLogReport { readable: true, ..Default::default() };
        r.add("4,1201,1917756584,-;WARNING: CPU: 1 PID: 77 at mm/memory.c:123 do_thing+0x1/0x2\n SUBSYSTEM=x");
        r.add("6,1202,1917756590,-;mitosis[4242]: segfault at 0 ip 00007f error 4 in libc.so.6");
        r.add("4,1203,1917756599,-;python3 invoked oom-killer: gfp_mask=0xcc0, order=0, oom_score_adj=0");
        r.add("6,1204,1917756600,-;eth0: link up");
        assert_eq!(r.records, 4);
        assert_eq!(r.kernel_failures.len(), 1);
        assert!(r.kernel_failures[0].starts_with("WARNING: CPU: 1"), "{:?}", r.kernel_failures);
        assert_eq!(r.crashes.len(), 1);
        assert_eq!(r.oom, 1);
        assert!(!r.kernel_clean());
    }

    #[test]
    fn a_mark_reads_only_what_came_after_it() {
        if !mitosis_testkit::require_root() {
            return;
        }
        // Root may add records to the kernel log (plain text, no alarm word).
        let note = |text: &str| std::fs::write("/dev/kmsg", format!("mitosis kernel-log test: {text}\n")).unwrap();
        let nonce = std::process::id();
        let mut first = KernelLog::mark();
        note(&format!("before {nonce}"));
        let mut second = KernelLog::mark();
        note(&format!("after {nonce}"));
        let (all, later) = (first.since(), second.since());
        assert!(all.readable && later.readable);
        assert!(all.records >= 2 && later.records >= 1, "{all:?} {later:?}");
        assert!(all.records > later.records, "the first mark saw the record before the second: {all:?} {later:?}");
        assert!(all.kernel_clean() && all.crashes.is_empty(), "{all:?}");
    }
}
