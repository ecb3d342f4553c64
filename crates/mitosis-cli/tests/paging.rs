//! How a child's memory comes in: every paging mode gives the memory of the
//! prepare instant, byte for byte (adaptive windows, no prefetch, eager
//! streaming, the recorded working set pushed, this host's page cache), and
//! no cache ever serves a page of an older generation of a seed.

#![forbid(unsafe_code)]

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The counters of `resume --profile`'s line on stderr, by the word after each number.
struct Profile(String);

impl Profile {
    fn of(out: &Finished) -> Profile {
        let line = out.stderr.lines().find(|l| l.starts_with("mitosis: resume ")).unwrap_or_else(|| panic!("no profile line: {out}"));
        Profile(line.to_string())
    }

    /// The number just before `words` in the line.
    fn number_before(&self, words: &str) -> u64 {
        let at = self.0.find(words).unwrap_or_else(|| panic!("{words:?} not in {:?}", self.0));
        let head = self.0[..at].trim_end();
        head.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or_else(|_| panic!("no number before {words:?} in {:?}", self.0))
    }

    fn pages(&self) -> u64 {
        self.number_before(" pages in")
    }
    fn pushed(&self) -> u64 {
        self.number_before(" pushed ahead")
    }
    fn cache_hits(&self) -> u64 {
        self.number_before(" from this host's cache")
    }
    fn waited(&self) -> u64 {
        self.number_before(" waited for pages")
    }
}

/// One child on b with `args`: touches its working set in `order`, verifies
/// it against `sum`, exits; returns its profile.
fn child(c: &Cluster, id: &str, order: &str, sum: &str, args: &[&str]) -> Profile {
    let mut all = vec!["--profile"];
    all.extend_from_slice(args);
    let out = c.resume_on_b_with_args(id, &format!("touch {order}\nverify\nexit 0\n"), &all);
    assert_eq!(out.code(), Some(0), "{args:?}: {out}\n{}", c.logs());
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{args:?}: {out}");
    assert_eq!(lines[1], format!("verify ok {sum}"), "{args:?} must give the prepare instant's memory: {out}");
    let p = Profile::of(&out);
    eprintln!("{args:?} {order}: {}", p.0);
    p
}

/// A child on b with `args` that answers one command, waits half a second
/// (pushes run meanwhile), then touches its working set in order, verifies
/// it against `sum` and exits; returns its profile.
fn paused_child(c: &Cluster, id: &str, sum: &str, args: &[&str]) -> Profile {
    let mut all = vec!["--profile"];
    all.extend_from_slice(args);
    let mut p = c.resume_on_b_args(id, &all);
    p.ask("now", "now ");
    std::thread::sleep(std::time::Duration::from_millis(500));
    p.send("touch seq\nverify\nexit 0\n");
    p.close_stdin();
    let out = p.finish(STEP);
    assert_eq!(out.code(), Some(0), "{args:?}: {out}\n{}", c.logs());
    assert_eq!(out.lines().get(1).copied(), Some(format!("verify ok {sum}").as_str()), "{args:?}: {out}");
    Profile::of(&out)
}

#[test]
fn every_paging_mode_gives_the_prepare_instant_memory() {
    let Some(c) = Cluster::new("paging-modes") else { return };
    let mb = 24;
    let (mut parent, ppid) = c.pattern_in_a(mb);
    let sum0 = parent.verify();
    c.prepare_a(ppid, "s");
    parent.ask("mutate", "mutated");
    let pages = (mb as u64) << 8;

    // One page per request, nothing pushed, nothing cached or recorded.
    let p = child(&c, "s", "random", &sum0, &["--no-prefetch", "--no-cache"]);
    assert_eq!(p.pushed(), 0);
    assert!(p.pages() >= pages && p.number_before(" requests") >= pages, "{}", p.0);
    let p = child(&c, "s", "seq", &sum0, &["--no-cache", "--no-working-set"]);
    assert_eq!((p.pushed(), p.cache_hits()), (0, 0), "{}", p.0);
    assert!(p.number_before(" requests") < pages / 16, "windows grow on sequential touch: {}", p.0);

    // The first default child records the working set and fills the cache;
    // the next gets the working set pushed, from the cache.
    let p = child(&c, "s", "random", &sum0, &[]);
    assert_eq!(p.pushed(), 0, "no working set recorded yet: {}", p.0);
    let stats = c.cli(&["stats", "--json", "--socket", c.a.socket().to_str().unwrap()]);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    let ws = stats["seeds"][0]["working_set_pages"].as_u64().unwrap();
    assert!(ws >= pages, "the working set covers what the child touched: {stats}");
    // The next child pauses after its start (the push runs meanwhile), then
    // touches everything: it finds the pages there.
    let p = paused_child(&c, "s", &sum0, &[]);
    assert!(p.pushed() >= pages, "the working set is pushed: {}", p.0);
    assert!(p.cache_hits() >= pages, "from this host's cache: {}", p.0);
    assert!(p.waited() < pages / 100, "few faults wait for pages: {}", p.0);
    // Touched right away in another order than the first child's: part of
    // it comes by faults before the push gets there; all of it is right.
    let p = child(&c, "s", "seq", &sum0, &[]);
    assert!(p.cache_hits() >= pages, "{}", p.0);

    // Eager: everything streamed in, from the network and from the cache
    // (what a child touches before the stream gets there comes by its faults).
    let p = paused_child(&c, "s", &sum0, &["--eager", "--no-cache"]);
    assert!(p.pushed() >= pages && p.cache_hits() == 0 && p.waited() < pages / 100, "{}", p.0);
    let p = child(&c, "s", "random", &sum0, &["--eager"]);
    assert!(p.pages() >= pages, "{}", p.0);
    parent.send("exit 0\n");
}

/// A seed prepared again under the same id: children of the new generation
/// never get the old generation's pages, from the page cache or from a
/// pushed working set, and the cache lets the old generation go.
#[test]
fn re_prepared_seed_never_serves_old_pages_from_any_cache() {
    let Some(c) = Cluster::new("paging-generations") else { return };
    let (mut parent, ppid) = c.pattern_in_a(8);
    let sum0 = parent.verify();
    c.prepare_a(ppid, "s");
    child(&c, "s", "seq", &sum0, &[]);
    let p = paused_child(&c, "s", &sum0, &[]);
    assert!(p.cache_hits() > 0 && p.pushed() > 0, "{}", p.0);

    parent.ask("mutate", "mutated");
    let sum1 = parent.verify();
    c.prepare_a(ppid, "s");
    for args in [&[][..], &["--eager"][..], &[][..]] {
        let p = child(&c, "s", "seq", &sum1, args);
        assert!(p.pages() > 0, "{}", p.0);
    }
    let stats = c.cli(&["stats", "--json", "--socket", c.b.socket().to_str().unwrap()]);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    assert_eq!(stats["cache"]["generations"], 1, "only the new generation stays cached: {stats}");
    parent.send("exit 0\n");
}

/// A page cache smaller than a seed evicts and stays within its limit;
/// children still get the right memory.
#[test]
fn small_page_cache_evicts_and_stays_correct() {
    let Some(c) = Cluster::build("paging-small-cache", KEY, KEY, &[], &["--cache-size", "4M"]) else { return };
    let (mut p1, pid1) = c.pattern_in_a(8);
    let (mut p2, pid2) = c.pattern_in_a(8);
    let (s1, s2) = (p1.verify(), p2.verify());
    c.prepare_a(pid1, "one");
    c.prepare_a(pid2, "two");
    for _ in 0..2 {
        child(&c, "one", "random", &s1, &[]);
        child(&c, "two", "seq", &s2, &[]);
    }
    let stats = c.cli(&["stats", "--json", "--socket", c.b.socket().to_str().unwrap()]);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    assert!(stats["cache"]["bytes"].as_u64().unwrap() <= 4 << 20, "{stats}");
    assert!(stats["cache"]["evictions"].as_u64().unwrap() > 0, "{stats}");
    p1.send("exit 0\n");
    p2.send("exit 0\n");
}

/// Prepare in copy mode: the daemon holds the memory, no snapshot process
/// stays; children get the prepare instant's memory, also after the process
/// is gone, in every paging mode.
#[test]
fn copy_mode_seed_needs_no_snapshot() {
    let Some(c) = Cluster::new("paging-copy") else { return };
    let (mut parent, ppid) = c.pattern_in_a(16);
    let sum0 = parent.verify();
    let sock = c.a.socket().to_str().unwrap().to_string();
    let out = c.cli(&["prepare", "--pid", &ppid.to_string(), "--id", "cp", "--copy", "--json", "--socket", &sock]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let seed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(seed["snapshot_pid"], 0, "{seed}");
    assert!(seed["copied_bytes"].as_u64().unwrap() >= 16 << 20, "{seed}");
    parent.ask("mutate", "mutated");
    child(&c, "cp", "random", &sum0, &["--no-cache"]);
    parent.send("exit 0\n");
    parent.wait(STEP);
    child(&c, "cp", "seq", &sum0, &["--no-cache", "--no-working-set"]);
    paused_child(&c, "cp", &sum0, &["--eager", "--no-cache"]);
}

/// Each running child on b, oldest first: (shared, private) bytes as `ps` shows them.
fn memory_on_b(c: &Cluster) -> Vec<(u64, u64)> {
    let ps = c.ps_on_b(false);
    let children = ps["children"].as_array().unwrap_or_else(|| panic!("no children: {ps}"));
    children.iter().map(|k| (k["shared_bytes"].as_u64().unwrap(), k["private_bytes"].as_u64().unwrap())).collect()
}

/// Children of one seed on one host share every page none of them wrote:
/// two children that read all of a seed's memory hold it once, in this
/// host's page cache, and each has only a little of its own; a child's
/// writes are its own (its neighbour and a later child still read the
/// seed's pages), and `ps` shows shared and private memory per child.
#[test]
fn children_of_one_seed_share_the_pages_none_of_them_wrote() {
    let Some(c) = Cluster::new("paging-shared") else { return };
    let mb = 32u64;
    let (mut parent, ppid) = c.pattern_in_a(mb as usize);
    let sum0 = parent.verify();
    c.prepare_a(ppid, "s");
    // One after the other: `ps` lists the older first.
    let kids: Vec<Proc> = (0..2)
        .map(|_| {
            let mut k = c.resume_on_b("s");
            assert_eq!(k.verify(), sum0, "{}", c.logs());
            k
        })
        .collect();
    let mut kids: [Proc; 2] = kids.try_into().unwrap_or_else(|_| unreachable!());
    let size = mb << 20;
    let memory = memory_on_b(&c);
    assert_eq!(memory.len(), 2, "{memory:?}");
    for &(shared, private) in &memory {
        assert!(shared >= size * 9 / 10, "each child maps the seed's pages from the cache: {memory:?}");
        assert!(private < size / 4, "each child holds little of its own: {memory:?}");
    }
    let stats = c.cli(&["stats", "--json", "--socket", c.b.socket().to_str().unwrap()]);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    let cached = stats["cache"]["bytes"].as_u64().unwrap();
    assert!(cached >= size && cached < size * 5 / 4, "one copy for both children: {stats}");

    // A child's writes are its own.
    kids[0].ask("mutate", "mutated");
    let sum1 = kids[0].verify();
    assert_ne!(sum1, sum0);
    assert_eq!(kids[1].verify(), sum0, "the other child still reads the seed's pages\n{}", c.logs());
    let mut third = c.resume_on_b("s");
    assert_eq!(third.verify(), sum0, "so does a later child\n{}", c.logs());
    let memory = memory_on_b(&c);
    let (writer, reader) = (memory[0], memory[1]);
    assert!(writer.1 >= size * 9 / 10, "the writer's pages are its own: {memory:?}");
    assert!(reader.1 < size / 4, "the reader's are still shared: {memory:?}");
    for mut k in kids.into_iter().chain([third]) {
        k.send("exit 0\n");
        assert_eq!(k.finish(STEP).code(), Some(0));
    }
    parent.send("exit 0\n");
}

/// The cache evicts a generation whose pages a running child shares: they
/// leave the child (it did not write them), which fetches them again as
/// its own when it next reads them, and reads the seed's memory all along.
#[test]
fn an_evicted_generation_leaves_its_running_children_correct() {
    let Some(c) = Cluster::build("paging-evict-shared", KEY, KEY, &[], &["--cache-size", "8M"]) else { return };
    let (mut p1, pid1) = c.pattern_in_a(6);
    let (mut p2, pid2) = c.pattern_in_a(6);
    let (s1, s2) = (p1.verify(), p2.verify());
    c.prepare_a(pid1, "one");
    c.prepare_a(pid2, "two");
    let mut first = c.resume_on_b("one");
    assert_eq!(first.verify(), s1, "{}", c.logs());
    assert!(memory_on_b(&c)[0].0 >= 5 << 20, "shared from the cache: {:?}", memory_on_b(&c));
    // Another seed's child fills the cache: "one"'s generation goes.
    let mut second = c.resume_on_b("two");
    assert_eq!(second.verify(), s2, "{}", c.logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    while memory_on_b(&c)[0].0 >= 1 << 20 {
        assert!(Instant::now() < deadline, "the evicted pages never left the first child: {:?}", memory_on_b(&c));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(first.verify(), s1, "fetched again after the eviction\n{}", c.logs());
    let (shared, private) = memory_on_b(&c)[0];
    assert!(shared < 1 << 20 && private >= 5 << 20, "now its own: {:?}", memory_on_b(&c));
    for mut k in [first, second] {
        k.send("exit 0\n");
        assert_eq!(k.finish(STEP).code(), Some(0));
    }
    p1.send("exit 0\n");
    p2.send("exit 0\n");
}
