//! Parsers for the `/proc/PID` files that capture reads. The parsers are pure
//! functions over text so they are tested without a process.

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub name: String,
}

/// Parses `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>, String> {
    text.lines().filter(|l| !l.is_empty()).map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Result<MapsEntry, String> {
    let bad = || format!("unparsable maps line: {line:?}");
    let mut it = line.splitn(6, ' ');
    let range = it.next().ok_or_else(bad)?;
    let perms = it.next().ok_or_else(bad)?.as_bytes();
    let offset = it.next().ok_or_else(bad)?;
    let dev = it.next().ok_or_else(bad)?;
    let inode = it.next().ok_or_else(bad)?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-').ok_or_else(bad)?;
    let (maj, min) = dev.split_once(':').ok_or_else(bad)?;
    if perms.len() < 4 {
        return Err(bad());
    }
    Ok(MapsEntry {
        start: u64::from_str_radix(s, 16).map_err(|_| bad())?,
        end: u64::from_str_radix(e, 16).map_err(|_| bad())?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: u64::from_str_radix(offset, 16).map_err(|_| bad())?,
        dev_major: u32::from_str_radix(maj, 16).map_err(|_| bad())?,
        dev_minor: u32::from_str_radix(min, 16).map_err(|_| bad())?,
        inode: inode.parse().map_err(|_| bad())?,
        name,
    })
}

/// The fields of `/proc/PID/status` capture uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub threads: u32,
    /// Effective uid and gid: what the process acts as.
    pub uid: u32,
    pub gid: u32,
    /// Real, effective, saved and filesystem uids; `None` when the line is
    /// missing or unparsable (never read as root by default).
    pub uids: Option<[u32; 4]>,
    pub gids: Option<[u32; 4]>,
    pub groups: Vec<u32>,
    /// Permitted and effective capability sets.
    pub cap_permitted: u64,
    pub cap_effective: u64,
    /// Parent's pid (0 for none).
    pub ppid: i32,
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    pub rss_kb: u64,
    /// Resident anonymous memory (`RssAnon`): the process's own pages.
    pub rss_anon_kb: u64,
    /// Resident shmem pages it maps (`RssShmem`): pages shared through a
    /// memfd or tmpfs file, such as a child's pages from the host's shared
    /// copy of its seed that it did not write.
    pub rss_shmem_kb: u64,
    /// The pid in the innermost PID namespace (last of `NSpid`); 0 if absent.
    pub ns_pid: i32,
    /// File mode creation mask (`Umask`, octal; Linux 4.7 and later).
    pub umask: Option<u32>,
    /// `THP_enabled`: false when `PR_SET_THP_DISABLE` is in force (Linux 5.0 and later).
    pub thp_enabled: Option<bool>,
}

pub fn parse_status(text: &str) -> Status {
    // Missing lines must never read as root or as holding no capabilities.
    let mut s = Status { uid: u32::MAX, gid: u32::MAX, cap_permitted: u64::MAX, cap_effective: u64::MAX, ..Status::default() };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        let first = || v.split_whitespace().next().unwrap_or("0");
        match k {
            "Threads" => s.threads = v.parse().unwrap_or(0),
            // Real, effective, saved, fs: the effective id is what the process acts as.
            "Uid" => {
                s.uids = four_ids(v);
                s.uid = s.uids.map_or(u32::MAX, |ids| ids[1]);
            }
            "Gid" => {
                s.gids = four_ids(v);
                s.gid = s.gids.map_or(u32::MAX, |ids| ids[1]);
            }
            "CapPrm" => s.cap_permitted = u64::from_str_radix(v, 16).unwrap_or(u64::MAX),
            "CapEff" => s.cap_effective = u64::from_str_radix(v, 16).unwrap_or(u64::MAX),
            "PPid" => s.ppid = v.parse().unwrap_or(0),
            "Groups" => s.groups = v.split_whitespace().filter_map(|x| x.parse().ok()).collect(),
            "SigBlk" => s.sig_blocked = u64::from_str_radix(v, 16).unwrap_or(0),
            "SigIgn" => s.sig_ignored = u64::from_str_radix(v, 16).unwrap_or(0),
            "SigCgt" => s.sig_caught = u64::from_str_radix(v, 16).unwrap_or(0),
            "VmRSS" => s.rss_kb = first().parse().unwrap_or(0),
            "RssAnon" => s.rss_anon_kb = first().parse().unwrap_or(0),
            "RssShmem" => s.rss_shmem_kb = first().parse().unwrap_or(0),
            "NSpid" => s.ns_pid = v.split_whitespace().last().and_then(|x| x.parse().ok()).unwrap_or(0),
            "Umask" => s.umask = u32::from_str_radix(v, 8).ok(),
            "THP_enabled" => s.thp_enabled = v.parse::<u8>().ok().map(|x| x != 0),
            _ => {}
        }
    }
    s
}

/// The four ids of a `Uid:` or `Gid:` line (real, effective, saved, filesystem).
fn four_ids(v: &str) -> Option<[u32; 4]> {
    let ids: Vec<u32> = v.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
    ids.try_into().ok()
}

/// The memory-layout fields of `/proc/PID/stat` (see proc_pid_stat(5)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatMm {
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

pub fn parse_stat_mm(text: &str) -> Result<StatMm, String> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text.rsplit_once(')').ok_or("unparsable stat")?.1;
    let f: Vec<u64> = rest.split_whitespace().skip(1).map(|x| crate::unsigned(x.parse::<i64>().unwrap_or(0))).collect();
    // `rest` starts at field 3 (state), which we skipped; field n is f[n - 4].
    let at = |n: usize| f.get(n - 4).copied().ok_or("short stat");
    Ok(StatMm {
        start_code: at(26)?,
        end_code: at(27)?,
        start_stack: at(28)?,
        start_data: at(45)?,
        end_data: at(46)?,
        start_brk: at(47)?,
        arg_start: at(48)?,
        arg_end: at(49)?,
        env_start: at(50)?,
        env_end: at(51)?,
    })
}

/// `flags` and `pos` of `/proc/PID/fdinfo/N`.
pub fn parse_fdinfo(text: &str) -> (i32, u64) {
    let mut flags = 0;
    let mut pos = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("flags:") {
            flags = i32::from_str_radix(v.trim(), 8).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("pos:") {
            pos = v.trim().parse().unwrap_or(0);
        }
    }
    (flags, pos)
}

/// One `lock:` line of `/proc/PID/fdinfo/N`: a lock or lease held through
/// that descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLock {
    /// `POSIX`, `OFDLCK`, `FLOCK`, `LEASE`, `DELEG`...
    pub kind: String,
    /// `READ`, `WRITE` or `UNLCK` (a lease being given up).
    pub access: String,
    pub start: u64,
    /// `None` for `EOF`.
    pub end: Option<u64>,
}

/// The `lock:` lines of a `/proc/PID/fdinfo/N` text, e.g.
/// `lock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF`.
pub fn parse_fdinfo_locks(text: &str) -> Result<Vec<FdLock>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lock:") else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        // id: KIND MODE ACCESS pid dev:ino start end
        let [_, kind, _, access, _, _, start, end] = words.as_slice() else {
            return Err(format!("a lock line of an unknown form: {line:?}"));
        };
        let start = start.parse().map_err(|_| format!("bad lock start in {line:?}"))?;
        let end = if *end == "EOF" { None } else { Some(end.parse().map_err(|_| format!("bad lock end in {line:?}"))?) };
        out.push(FdLock { kind: (*kind).to_string(), access: (*access).to_string(), start, end });
    }
    Ok(out)
}

/// Number of threads of process `pid` ("self" for the caller), from `/proc/PID/task`.
pub fn thread_count(pid: impl std::fmt::Display) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?.count())
}

/// The thread ids of process `pid`, from `/proc/PID/task`, in ascending
/// order.
pub fn thread_ids(pid: i32) -> std::io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Bits of a `/proc/PID/pagemap` entry.
pub mod pagemap {
    pub const PRESENT: u64 = 1 << 63;
    pub const SWAPPED: u64 = 1 << 62;
    pub const FILE_OR_SHARED: u64 = 1 << 61;
}

/// Parses `/proc/PID/limits` into `(resource, soft, hard)` for each of the
/// 16 resources, in `RLIMIT_*` order (the kernel prints them in that order,
/// `unlimited` for `RLIM_INFINITY`). Errors on any other shape.
pub fn parse_limits(text: &str) -> Result<Vec<(u32, u64, u64)>, String> {
    // The kernel's fixed names, in resource-number order.
    const NAMES: [&str; 16] = [
        "Max cpu time", "Max file size", "Max data size", "Max stack size", "Max core file size", "Max resident set",
        "Max processes", "Max open files", "Max locked memory", "Max address space", "Max file locks",
        "Max pending signals", "Max msgqueue size", "Max nice priority", "Max realtime priority", "Max realtime timeout",
    ];
    let value = |v: &str| if v == "unlimited" { Ok(u64::MAX) } else { v.parse::<u64>().map_err(|_| format!("bad limit {v:?}")) };
    let rows: Vec<&str> = text.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    if rows.len() != NAMES.len() {
        return Err(format!("{} limit lines, expected {}", rows.len(), NAMES.len()));
    }
    let mut out = Vec::with_capacity(NAMES.len());
    for ((resource, name), row) in (0u32..).zip(NAMES).zip(rows) {
        let rest = row.strip_prefix(name).ok_or_else(|| format!("expected {name:?}, got {row:?}"))?;
        let mut words = rest.split_whitespace();
        let (Some(soft), Some(hard)) = (words.next(), words.next()) else { return Err(format!("short limit line {row:?}")) };
        out.push((resource, value(soft)?, value(hard)?));
    }
    Ok(out)
}

/// The `VmFlags` of every mapping in `/proc/PID/smaps`: (start, end, its
/// flag names).
pub fn parse_smaps_flags(text: &str) -> Vec<(u64, u64, Vec<&str>)> {
    let mut out = Vec::new();
    let mut range = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some((s, e)) = range.take() {
                out.push((s, e, flags.split_whitespace().collect()));
            }
        } else if let Some((first, _)) = line.split_once(' ') {
            // A mapping's first line starts with "start-end"; field lines with "Name:".
            if let Some((s, e)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
                range = u64::from_str_radix(s, 16).ok().zip(u64::from_str_radix(e, 16).ok());
            }
        }
    }
    out
}

/// One POSIX timer of `/proc/PID/timers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcTimer {
    pub id: i32,
    /// The signal it sends and its `sigev_value`.
    pub signo: i32,
    pub value: u64,
    /// `sigev_notify` without `SIGEV_THREAD_ID`: `SIGEV_SIGNAL`, `SIGEV_NONE`
    /// or `SIGEV_THREAD`.
    pub notify: i32,
    /// Directed at one thread (`SIGEV_THREAD_ID`), whose id is `target`;
    /// else `target` is the process (ids as the reader's /proc shows them).
    pub to_thread: bool,
    pub target: i32,
    pub clock: i32,
}

/// Parses `/proc/PID/timers`: blocks of `ID:`, `signal: N/VALUE`,
/// `notify: KIND/pid.N` (or `tid.N`) and `ClockID:` lines.
pub fn parse_timers(text: &str) -> Result<Vec<ProcTimer>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(first) = lines.next() {
        let field = |line: Option<&str>, name: &str| -> Result<String, String> {
            let line = line.ok_or_else(|| format!("a timer without its {name} line"))?;
            line.strip_prefix(name).map(|v| v.trim().to_string()).ok_or_else(|| format!("expected {name:?}, got {line:?}"))
        };
        let bad = |what: &str, v: &str| format!("bad {what} {v:?} in /proc timers");
        let id = field(Some(first), "ID:")?;
        let signal = field(lines.next(), "signal:")?;
        let notify = field(lines.next(), "notify:")?;
        let clock = field(lines.next(), "ClockID:")?;
        let (signo, value) = signal.split_once('/').ok_or_else(|| bad("signal", &signal))?;
        let (kind, target) = notify.split_once('/').ok_or_else(|| bad("notify", &notify))?;
        let (to_thread, target) = match target.split_once('.') {
            Some(("tid", n)) => (true, n),
            Some(("pid", n)) => (false, n),
            _ => return Err(bad("notify target", target)),
        };
        out.push(ProcTimer {
            id: id.parse().map_err(|_| bad("id", &id))?,
            signo: signo.parse().map_err(|_| bad("signal", signo))?,
            value: u64::from_str_radix(value, 16).map_err(|_| bad("sigev_value", value))?,
            notify: match kind {
                "signal" => libc::SIGEV_SIGNAL,
                "none" => libc::SIGEV_NONE,
                "thread" => libc::SIGEV_THREAD,
                other => return Err(bad("notify kind", other)),
            },
            to_thread,
            target: target.parse().map_err(|_| bad("notify target", target))?,
            clock: clock.parse().map_err(|_| bad("clock", &clock))?,
        });
    }
    Ok(out)
}

/// A path field of `/proc/PID/mountinfo` with the kernel's `\NNN` octal
/// escapes (of space, tab, newline and backslash) undone.
pub fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b\\011c\\134d"), "/mnt/a b\tc\\d");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/odd\\9xy\\"), "/odd\\9xy\\", "not an escape: kept");
    }

    #[test]
    fn fdinfo_lock_lines() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t30\nino:\t5\nlock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 99\nlock:\t2: FLOCK  ADVISORY  READ 1234 08:01:5678 0 EOF\nlock:\t3: LEASE  ACTIVE    READ 1234 08:01:5678 0 EOF\n";
        let locks = parse_fdinfo_locks(text).unwrap();
        assert_eq!(locks.len(), 3);
        assert_eq!(locks[0], FdLock { kind: "POSIX".into(), access: "WRITE".into(), start: 0, end: Some(99) });
        assert_eq!((locks[1].kind.as_str(), locks[1].end), ("FLOCK", None));
        assert_eq!((locks[2].kind.as_str(), locks[2].access.as_str()), ("LEASE", "READ"));
        assert!(parse_fdinfo_locks("lock:\t1: POSIX ADVISORY\n").is_err());
    }

    #[test]
    fn smaps_flags() {
        let text = "7f00-7f10 rw-p 00000000 00:00 0 \nSize:                 64 kB\nVmFlags: rd wr mr mw me lo dc \n7f20-7f30 r--p 00000000 08:01 5   /usr/lib/x\nRss: 4 kB\nVmFlags: rd mr me wf\n";
        assert_eq!(
            parse_smaps_flags(text),
            vec![(0x7f00, 0x7f10, vec!["rd", "wr", "mr", "mw", "me", "lo", "dc"]), (0x7f20, 0x7f30, vec!["rd", "mr", "me", "wf"])]
        );
    }

    #[test]
    fn timers_blocks() {
        let text = "ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.100\nClockID: 0\nID: 3\nsignal: 34/000055d0c0de0010\nnotify: signal/tid.101\nClockID: 1\n";
        let t = parse_timers(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], ProcTimer { id: 0, signo: 14, value: 0, notify: libc::SIGEV_SIGNAL, to_thread: false, target: 100, clock: 0 });
        assert_eq!((t[1].id, t[1].value, t[1].to_thread, t[1].target, t[1].clock), (3, 0x55d0_c0de_0010, true, 101, 1));
        assert!(parse_timers("").unwrap().is_empty());
        assert!(parse_timers("ID: 1\nsignal: 14/0\n").is_err(), "a cut block is an error");
        assert!(parse_timers("ID: 1\nsignal: x/0\nnotify: none/pid.1\nClockID: 1\n").is_err());
    }

    #[test]
    fn maps_lines() {
        let text = "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n\
7f1c2a000000-7f1c2a022000 r-xp 00002000 fe:01 1234567                    /usr/lib/x86_64-linux-gnu/ld linux.so\n\
7ffd1b3c5000-7ffd1b3c7000 r-xp 00000000 00:00 0 [vdso]\n\
7f00 -bad\n";
        assert!(parse_maps(text).is_err());
        let ok: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        let m = parse_maps(&ok).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "[heap]");
        assert!(m[0].write && !m[0].exec && !m[0].shared);
        assert_eq!(m[1].offset, 0x2000);
        assert_eq!((m[1].dev_major, m[1].dev_minor, m[1].inode), (0xfe, 1, 1234567));
        assert_eq!(m[1].name, "/usr/lib/x86_64-linux-gnu/ld linux.so");
        assert_eq!(m[2].name, "[vdso]");
    }

    #[test]
    fn limits_table() {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let all = parse_limits(&text).unwrap();
        assert_eq!(all.len(), 16);
        assert!(all.iter().enumerate().all(|(i, l)| l.0 as usize == i && l.1 <= l.2));
        let cut: String = text.lines().take(10).map(|l| format!("{l}\n")).collect();
        assert!(parse_limits(&cut).is_err());
        assert!(parse_limits(&text.replace("Max open files", "Max open filez")).is_err());
    }

    #[test]
    fn status_fields() {
        let s = parse_status("Name:\tx\nUid:\t1000\t1001\t1000\t1000\nGid:\t5\t6\t5\t5\nGroups:\t4 24 \nThreads:\t3\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000002\nVmRSS:\t  1234 kB\nRssAnon:\t  200 kB\nRssFile:\t 30 kB\nRssShmem:\t 1004 kB\n");
        assert_eq!((s.rss_anon_kb, s.rss_shmem_kb), (200, 1004));
        assert_eq!((s.threads, s.uid, s.gid), (3, 1001, 6));
        assert_eq!(s.uids, Some([1000, 1001, 1000, 1000]));
        assert_eq!(s.gids, Some([5, 6, 5, 5]));
        assert_eq!(s.groups, vec![4, 24]);
        assert_eq!(s.sig_blocked, 0x10000);
        assert_eq!(s.sig_caught, 0x1_8000_0002);
        assert_eq!(s.rss_kb, 1234);
        assert_eq!(s.umask, None, "no Umask line");
        assert_eq!(parse_status("Umask:\t0027\n").umask, Some(0o027));
        assert_eq!(parse_status("THP_enabled:\t0\n").thp_enabled, Some(false));
        assert_eq!(s.thp_enabled, None);
    }

    #[test]
    fn missing_or_garbled_ids_are_never_root() {
        let s = parse_status("Name:\tx\nUid:\t1000 x 1000 1000\nCapPrm:\tzz\n");
        assert_eq!(s.uids, None);
        assert_ne!(s.uid, 0);
        assert_ne!(s.gid, 0);
        assert_eq!(s.cap_permitted, u64::MAX);
        let s = parse_status("PPid:\t17\nCapPrm:\t0000000000000400\nCapEff:\t0000000000000000\n");
        assert_eq!((s.ppid, s.cap_permitted, s.cap_effective), (17, 0x400, 0));
    }

    #[test]
    fn stat_with_spaces_in_name() {
        let mut fields = vec!["S".to_string()];
        fields.extend((4..=52).map(|n| n.to_string()));
        let text = format!("42 (a) b) {}", fields.join(" "));
        let mm = parse_stat_mm(&text).unwrap();
        assert_eq!(mm.start_code, 26);
        assert_eq!(mm.start_stack, 28);
        assert_eq!(mm.start_brk, 47);
        assert_eq!(mm.env_end, 51);
    }

    #[test]
    fn fdinfo() {
        assert_eq!(parse_fdinfo("pos:\t42\nflags:\t0100002\nmnt_id:\t3\n"), (0o100002, 42));
    }
}
