//! Offloading a running child's memory (`mitosis offload`) and bringing it
//! back (`mitosis prefetch`): a seed in host a, its child in host b, and a
//! memory node in host a. The child's pages go to the node (changed ones) or
//! are dropped (unchanged ones, which come back from the seed), and the
//! child then checks every byte of its memory.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::{assert_killed_by_mitosis, Cluster};
use mitosis_testkit::{write_key, Memnode};

const STEP: Duration = Duration::from_secs(60);
/// Memory of the seed's pattern, in MiB.
const MB: usize = 32;
const PAGES: u64 = (MB as u64) << 8;

/// A cluster whose daemon b offloads to a memory node in host a.
fn setup(name: &str) -> Option<(Cluster, Memnode)> {
    let c = Cluster::build(name, common::KEY, common::KEY, &[], &["--memnode", "{memnode-a}"])?;
    let key = write_key(&c.dir, "memnode-key", common::KEY);
    let node = Memnode::start(&common::bin(), &c.hosts.a, &c.dir, "memnode", &key, &["--capacity", "1G", "--compress", "lz4"]).expect("starting the memory node");
    Some((c, node))
}

/// `mitosis offload <pid> --json` on b.
fn offload(c: &Cluster, pid: i32) -> serde_json::Value {
    let out = c.cli(&["offload", &pid.to_string(), "--json", "--socket", c.b.socket().to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "offload: {out}\n{}", c.logs());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("offload --json printed no JSON ({e}): {out}"))
}

fn pages(report: &serde_json::Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("no {field} in {report}"))
}

#[test]
fn an_offloaded_child_gets_every_page_back_from_the_seed_or_the_node() {
    let Some((c, _node)) = setup("offload-round-trips") else { return };
    let (_parent, pid) = c.pattern_in_a(MB);
    c.prepare_a(pid, "offloaded");
    let mut child = c.resume_on_b_args("offloaded", &["--track-writes"]);
    let before = child.ask("verify", "verify ");
    assert!(before.starts_with("verify ok"), "{before}");
    let child_pid = c.only_child_on_b();

    // Read, not written: dropped, nothing sent.
    let r = offload(&c, child_pid);
    assert!(pages(&r, "pages_clean_at_seed") >= PAGES, "the pattern's pages are the seed's: {r}");
    assert!(pages(&r, "pages_put") < PAGES / 8, "unchanged pages are not sent: {r}");
    assert!(pages(&r, "rss_after_bytes") + ((MB as u64) << 20) / 2 < pages(&r, "rss_before_bytes"), "memory was given back: {r}");
    assert_eq!(child.ask("verify", "verify "), before, "pages dropped unchanged come back from the seed");

    // Written: sent to the node, then brought back from it.
    let mutated = child.ask("mutate", "mutated");
    assert_eq!(mutated, "mutated");
    let after_mutate = child.ask("verify", "verify ");
    assert!(after_mutate.starts_with("verify ok"), "{after_mutate}");
    let r = offload(&c, child_pid);
    assert!(pages(&r, "pages_put") >= PAGES, "every written page goes to the node: {r}");
    assert!(pages(&r, "node_bytes") > 0, "{r}");
    assert_eq!(child.ask("verify", "verify "), after_mutate, "pages come back from the node as they were written");

    // Brought back and not written since: the node still has them.
    let r = offload(&c, child_pid);
    assert!(pages(&r, "pages_clean_at_node") >= PAGES, "{r}");
    assert!(pages(&r, "pages_put") < PAGES / 8, "{r}");

    // Prefetch on reuse: everything comes back before the child touches it
    // (`resident` waits, without touching, until every page is there, and
    // says STALLED after 5 s without a new one).
    let out = c.cli(&["prefetch", &child_pid.to_string(), "--socket", c.b.socket().to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "prefetch: {out}\n{}", c.logs());
    assert!(out.stdout.contains("from the memory node"), "{out}");
    let resident = child.ask("resident", "resident ");
    assert!(!resident.contains("STALLED") && !resident.contains("FAILED"), "the prefetch brought every page back: {resident}\n{}", c.logs());
    assert_eq!(child.ask("verify", "verify "), after_mutate);
    child.close_stdin();
    let out = child.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
}

#[test]
fn without_write_tracking_every_page_is_sent_and_comes_back() {
    let Some((c, _node)) = setup("offload-untracked") else { return };
    let (_parent, pid) = c.pattern_in_a(MB);
    c.prepare_a(pid, "untracked");
    let mut child = c.resume_on_b_args("untracked", &["--no-container"]);
    let before = child.ask("verify", "verify ");
    let r = offload(&c, c.only_child_on_b());
    assert_eq!(pages(&r, "pages_clean_at_seed") + pages(&r, "pages_clean_at_node"), 0, "nothing is known clean: {r}");
    assert!(pages(&r, "pages_put") >= PAGES, "{r}");
    assert_eq!(child.ask("verify", "verify "), before);
    child.close_stdin();
    assert_eq!(child.finish(STEP).code(), Some(0));
}

#[test]
fn a_child_whose_memory_node_is_gone_is_killed_with_the_reason() {
    let Some((c, node)) = setup("offload-node-gone") else { return };
    let (_parent, pid) = c.pattern_in_a(MB);
    c.prepare_a(pid, "orphaned");
    let mut child = c.resume_on_b_args("orphaned", &["--track-writes"]);
    assert_eq!(child.ask("mutate", "mutated"), "mutated");
    let r = offload(&c, c.only_child_on_b());
    assert!(pages(&r, "pages_put") >= PAGES, "{r}");
    drop(node);
    child.send("verify\n");
    child.close_stdin();
    let out = child.finish(STEP);
    assert_killed_by_mitosis(&out, "memory node", &[], &c.logs());
}

#[test]
fn a_full_memory_node_refuses_the_offload_and_the_child_keeps_its_memory() {
    let Some(c) = Cluster::build("offload-node-full", common::KEY, common::KEY, &[], &["--memnode", "{memnode-a}"]) else { return };
    let key = write_key(&c.dir, "memnode-key", common::KEY);
    let _node = Memnode::start(&common::bin(), &c.hosts.a, &c.dir, "memnode", &key, &["--capacity", "4M"]).expect("starting the memory node");
    let (_parent, pid) = c.pattern_in_a(MB);
    c.prepare_a(pid, "too-big");
    let mut child = c.resume_on_b_args("too-big", &["--track-writes"]);
    assert_eq!(child.ask("mutate", "mutated"), "mutated");
    let after_mutate = child.ask("verify", "verify ");
    let out = c.cli(&["offload", &c.only_child_on_b().to_string(), "--socket", c.b.socket().to_str().unwrap()]);
    assert_eq!(out.code(), Some(75), "a full node is a busy one: {out}");
    assert!(out.stderr.contains("memory node full"), "{out}");
    assert_eq!(child.ask("verify", "verify "), after_mutate, "nothing was dropped");
    child.close_stdin();
    assert_eq!(child.finish(STEP).code(), Some(0));
}

#[test]
fn offloading_needs_a_memory_node_and_a_known_child() {
    let Some(c) = Cluster::new("offload-refusals") else { return };
    let sock = c.b.socket().to_str().unwrap().to_string();
    let out = c.cli(&["offload", "4242", "--socket", &sock]);
    assert_eq!(out.code(), Some(66), "{out}");
    assert!(out.stderr.contains("no running child"), "{out}");
    let (_parent, pid) = c.pattern_in_a(4);
    c.prepare_a(pid, "no-node");
    let mut child = c.resume_on_b("no-node");
    child.ask("verify", "verify ");
    let out = c.cli(&["offload", &c.only_child_on_b().to_string(), "--socket", &sock]);
    assert_eq!(out.code(), Some(65), "{out}");
    assert!(out.stderr.contains("no memory node"), "{out}");
    child.close_stdin();
    assert_eq!(child.finish(STEP).code(), Some(0));
}

#[test]
fn a_page_dropped_as_the_seeds_never_comes_from_a_seed_prepared_again() {
    let Some((c, _node)) = setup("offload-reprepared") else { return };
    let (_parent, pid) = c.pattern_in_a(MB);
    c.prepare_a(pid, "replaced");
    let mut child = c.resume_on_b_args("replaced", &["--track-writes", "--no-cache"]);
    assert!(child.ask("verify", "verify ").starts_with("verify ok"));
    let r = offload(&c, c.only_child_on_b());
    assert!(pages(&r, "pages_clean_at_seed") >= PAGES, "{r}");
    // The same id, another generation (its pattern changed meanwhile).
    let (_other, other_pid) = c.pattern_in_a(MB);
    c.prepare_a(other_pid, "replaced");
    child.send("verify\n");
    child.close_stdin();
    let out = child.finish(STEP);
    assert_killed_by_mitosis(&out, "prepared again", &[], &c.logs());
}
