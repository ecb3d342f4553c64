//! Test hosts: private network namespaces joined by a veth pair
//! ([`TwoHosts`]), or several joined by a bridge in one of them ([`Star`]).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// One test host: a network namespace and its address on the pair's link.
#[derive(Debug, Clone)]
pub struct Host {
    /// Name of the network namespace (as listed by `ip netns list`).
    pub ns: String,
    /// The host's IPv4 address, without prefix length.
    pub ip: String,
}

impl Host {
    /// Command prefix that runs a program inside this host:
    /// `["ip", "netns", "exec", ns]`.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.ns]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Host {
    /// Runs `f` on a new thread that has entered this host's network
    /// namespace; threads `f` starts (a tokio runtime's) inherit it. The
    /// rest of the process stays where it is.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.ns);
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let name = format!("in-{}", self.ns);
        let thread = std::thread::Builder::new().name(name).spawn(move || -> anyhow::Result<T> {
            mitosis_sys::ns::setns(&ns, libc::CLONE_NEWNET).map_err(|e| anyhow::anyhow!("entering the host's network namespace: {e}"))?;
            Ok(f())
        })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Two hosts `a` (`10.213.<k>.1/24`) and `b` (`10.213.<k>.2/24`) in fresh
/// network namespaces joined by a veth pair. Both namespaces are deleted on
/// drop, which also destroys the veth pair.
#[derive(Debug)]
pub struct TwoHosts {
    pub a: Host,
    pub b: Host,
    /// Third octet of the addresses, reserved in `LIVE_SUBNETS` until drop.
    k: u8,
    /// Which of the two namespaces exist, so a half-way failure cleans up
    /// exactly what was created.
    created: [bool; 2],
}

/// Third octets in use by live pairs of this process.
static LIVE_SUBNETS: Mutex<Option<HashSet<u8>>> = Mutex::new(None);

fn reserve_subnet(seed: u32) -> anyhow::Result<u8> {
    let mut live = LIVE_SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
    let live = live.get_or_insert_with(HashSet::new);
    for i in 0..250 {
        let k = u8::try_from((seed + i) % 250 + 1).unwrap_or(1);
        if live.insert(k) {
            return Ok(k);
        }
    }
    bail!("all 250 test subnets 10.213.1-250.0/24 are in use by this process")
}

fn release_subnet(k: u8) {
    let mut live = LIVE_SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = live.as_mut() {
        live.remove(&k);
    }
}

/// Runs `ip <args>`, failing with its stderr if it does not succeed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed? see scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The pid in a namespace name of ours: `mts<pid>x<n>a|b` (a pair) or
/// `mts<pid>s<n>h<i>` (a star).
fn owner_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("mts")?;
    if let Some((pid, tail)) = rest.split_once('x') {
        let n = tail.strip_suffix('a').or_else(|| tail.strip_suffix('b'))?;
        n.parse::<u32>().ok()?;
        return pid.parse().ok();
    }
    let (pid, tail) = rest.split_once('s')?;
    let (n, i) = tail.split_once('h')?;
    n.parse::<u32>().ok()?;
    i.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Deletes the namespaces of test processes that are gone (killed before
/// their guards ran), once per process.
fn remove_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_of(&name) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = ip(&["netns", "del", &name]);
                }
            }
        }
    });
}

impl TwoHosts {
    /// Creates the two namespaces and the link between them. Needs root.
    pub fn new() -> anyhow::Result<TwoHosts> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        remove_stale_namespaces();

        // Names are `mts<pid>x<n>a|b`: with pids below 10^7 and n below 1000
        // they fit the 15-byte interface-name limit, since the veth ends are
        // named after their namespaces. Skip names left over by a dead
        // process that had our pid.
        let (n, a_ns, b_ns) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let a = format!("mts{pid}x{}a", n % 1000);
            let b = format!("mts{pid}x{}b", n % 1000);
            if !ns_exists(&a) && !ns_exists(&b) {
                break (n, a, b);
            }
            if n > 2000 {
                bail!("no free namespace name for pid {pid}");
            }
        };
        let k = reserve_subnet(pid.wrapping_mul(7).wrapping_add(n))?;

        // From here on, dropping `hosts` (also on early error return) deletes
        // whatever has been created.
        let mut hosts = TwoHosts {
            a: Host {
                ns: a_ns,
                ip: format!("10.213.{k}.1"),
            },
            b: Host {
                ns: b_ns,
                ip: format!("10.213.{k}.2"),
            },
            k,
            created: [false; 2],
        };
        let (a, b) = (hosts.a.ns.clone(), hosts.b.ns.clone());

        ip(&["netns", "add", &a])?;
        hosts.created[0] = true;
        ip(&["netns", "add", &b])?;
        hosts.created[1] = true;

        // The pair is created inside `a` with its peer moved straight into
        // `b`, so nothing ever appears in the host's own namespace.
        ip(&[
            "-n", &a, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &b,
        ])?;
        for (ns, addr) in [(&a, &hosts.a.ip), (&b, &hosts.b.ip)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ns])?;
            ip(&["-n", ns, "link", "set", ns, "up"])?;
        }
        Ok(hosts)
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for (created, host) in self.created.iter().zip([&self.a, &self.b]) {
            if *created {
                let _ = ip(&["netns", "del", &host.ns]);
            }
        }
        release_subnet(self.k);
    }
}

/// A center host and up to eight leaves in fresh network namespaces, all on
/// one link: a bridge in the center joins a veth pair to each leaf. The
/// center is `10.213.<k>.1/24`, leaf i `10.213.<k>.<2+i>/24`. Every
/// namespace is deleted on drop (which destroys the pairs and the bridge).
#[derive(Debug)]
pub struct Star {
    pub center: Host,
    pub leaves: Vec<Host>,
    k: u8,
    /// The namespaces created so far (center first).
    created: Vec<String>,
}

impl Star {
    /// Creates the center, `leaves` leaves (1 to 8) and their links. Needs root.
    pub fn new(leaves: usize) -> anyhow::Result<Star> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if !(1..=8).contains(&leaves) {
            bail!("a star has 1 to 8 leaves, not {leaves}");
        }
        let pid = std::process::id();
        remove_stale_namespaces();
        // `mts<pid>s<n>h<i>`: 15 bytes at most (pids below 10^7, n below
        // 1000, i below 10), the interface-name limit; the center is h0.
        let name = |n: u32, i: usize| format!("mts{pid}s{}h{i}", n % 1000);
        let n = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            if (0..=leaves).all(|i| !ns_exists(&name(n, i))) {
                break n;
            }
            if n > 2000 {
                bail!("no free namespace names for pid {pid}");
            }
        };
        let k = reserve_subnet(pid.wrapping_mul(11).wrapping_add(n).wrapping_add(97))?;
        let host = |i: usize| Host { ns: name(n, i), ip: format!("10.213.{k}.{}", i + 1) };
        let mut star = Star { center: host(0), leaves: (1..=leaves).map(host).collect(), k, created: Vec::new() };
        let center = star.center.ns.clone();
        ip(&["netns", "add", &center])?;
        star.created.push(center.clone());
        ip(&["-n", &center, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &center, "link", "set", "br0", "up"])?;
        ip(&["-n", &center, "link", "set", "lo", "up"])?;
        ip(&["-n", &center, "addr", "add", &format!("{}/24", star.center.ip), "dev", "br0"])?;
        for leaf in star.leaves.clone() {
            ip(&["netns", "add", &leaf.ns])?;
            star.created.push(leaf.ns.clone());
            // The leaf's end is named after the leaf; the center's after it
            // with 'p' for 'h' (also unique, also 15 bytes at most).
            let port = leaf.ns.replacen('h', "p", 1);
            ip(&["-n", &leaf.ns, "link", "add", &leaf.ns, "type", "veth", "peer", "name", &port, "netns", &center])?;
            ip(&["-n", &center, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &center, "link", "set", &port, "up"])?;
            ip(&["-n", &leaf.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &leaf.ns, "addr", "add", &format!("{}/24", leaf.ip), "dev", &leaf.ns])?;
            ip(&["-n", &leaf.ns, "link", "set", &leaf.ns, "up"])?;
        }
        Ok(star)
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        release_subnet(self.k);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn owners_of_our_namespace_names() {
        assert_eq!(owner_of("mts25844x0a"), Some(25844));
        assert_eq!(owner_of("mts1x12b"), Some(1));
        assert_eq!(owner_of("mts25844x0c"), None);
        assert_eq!(owner_of("other"), None);
        assert_eq!(owner_of("mtsabcx0a"), None);
        assert_eq!(owner_of("mts25844s3h0"), Some(25844));
        assert_eq!(owner_of("mts25844s3p1"), None, "a center's port is no namespace");
    }

    use super::*;
    use crate::faults::ping;
    use crate::{require_root, wait_until};
    use std::time::Duration;

    fn ns_listed(name: &str) -> bool {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }

    #[test]
    fn two_hosts_ping_each_other_and_vanish_on_drop() {
        if !require_root() {
            return;
        }
        let hosts = TwoHosts::new().unwrap();
        assert!(hosts.a.ns.len() <= 15 && hosts.b.ns.len() <= 15);
        assert!(ns_listed(&hosts.a.ns) && ns_listed(&hosts.b.ns));
        assert!(wait_until(Duration::from_secs(5), || ping(
            &hosts.a, &hosts.b
        )));
        assert!(ping(&hosts.b, &hosts.a));
        assert_eq!(hosts.a.exec_prefix(), ["ip", "netns", "exec", &hosts.a.ns]);

        let (a, b) = (hosts.a.ns.clone(), hosts.b.ns.clone());
        drop(hosts);
        assert!(!ns_listed(&a) && !ns_listed(&b));
    }

    #[test]
    fn concurrent_pairs_get_distinct_names_and_subnets() {
        if !require_root() {
            return;
        }
        let x = TwoHosts::new().unwrap();
        let y = TwoHosts::new().unwrap();
        assert_ne!(x.a.ns, y.a.ns);
        assert_ne!(x.a.ip, y.a.ip);
        // Each pair is isolated: x cannot reach y.
        assert!(!ping(&x.a, &y.b));
    }

    #[test]
    fn a_star_links_every_leaf_to_the_center_and_vanishes_on_drop() {
        if !require_root() {
            return;
        }
        let star = Star::new(3).unwrap();
        let names: Vec<String> = std::iter::once(&star.center).chain(&star.leaves).map(|h| h.ns.clone()).collect();
        assert!(names.iter().all(|n| n.len() <= 15 && ns_listed(n)), "{names:?}");
        for leaf in &star.leaves {
            assert!(wait_until(Duration::from_secs(5), || ping(leaf, &star.center)), "{} -> center", leaf.ns);
        }
        assert!(ping(&star.leaves[0], &star.leaves[2]), "leaves reach each other through the bridge");
        drop(star);
        assert!(names.iter().all(|n| !ns_listed(n)), "{names:?}");
    }
}
