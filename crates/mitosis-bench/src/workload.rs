//! Workload programs, driven by line commands on stdin, answering on stdout.
//!
//! `pattern` maps `--mb` MiB of anonymous memory and fills every 8-byte word
//! with a value derived from its index, plus a heap vector and a stack array
//! with known contents; then it answers:
//!
//! | command         | answer                                                      |
//! |-----------------|-------------------------------------------------------------|
//! | `verify`        | `verify ok <sum>` or `verify FAILED <what>`                 |
//! | `mutate`        | `mutated` (rewrites everything with another pattern)        |
//! | `touch seq`     | `touch <ns>`: one write per page, in order                  |
//! | `touch random`  | `touch <ns>`: one write per page, shuffled order            |
//! | `touch seq N`   | `touch <ns>`: the first N pages only, in order              |
//! | `fork`          | `fork <ns>`: a local fork()+exit+wait, parent side time     |
//! | `now`           | `now <CLOCK_MONOTONIC ns>`                                  |
//! | `latency N`     | `latency <n> <p50> <p90> <p99> <max>` (ns): first touches of |
//! |                 | N distinct random pages, one at a time, each timed          |
//! | `local-latency N` | the same on N pages of a fresh anonymous mapping          |
//! | `resident`      | `resident <CLOCK_MONOTONIC ns> <polls> <bytes>` once every  |
//! |                 | page of the working set and heap vector (`bytes`) is        |
//! |                 | resident (polled with `mincore`, which never faults), or    |
//! |                 | `resident STALLED <resident> <total>` (pages) when none     |
//! |                 | came for 5 s, or `resident FAILED <why>`                    |
//! | `pid`           | `pid <pid>`                                                 |
//! | `exit <n>`      | exits with status n                                         |
//!
//! With `--self-prepare ID`, it prepares itself through the library right after
//! filling memory and prints `role parent` or `role child <pid>` first.
//! It never starts a thread.

use std::io::{BufRead, Write};

use mitosis_sys::mem::AnonMap;

const STACK_WORDS: usize = 512;

fn word(i: u64, salt: u64) -> u64 {
    (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ salt
}

struct Memory {
    map: AnonMap,
    heap: Vec<u64>,
    salt: u64,
}

impl Memory {
    fn new(mb: usize) -> Memory {
        let map = AnonMap::new(mb.max(1) << 20).unwrap_or_else(|e| panic!("mmap of {mb} MiB: {e}"));
        let mut m = Memory { map, heap: vec![0; 100_000], salt: 1 };
        m.fill(1);
        m
    }

    fn slice(&mut self) -> &mut [u64] {
        self.map.words_mut()
    }

    fn fill(&mut self, salt: u64) {
        self.salt = salt;
        for (i, w) in self.slice().iter_mut().enumerate() {
            *w = word(i as u64, salt);
        }
        for (i, w) in self.heap.iter_mut().enumerate() {
            *w = word(i as u64, salt ^ 0xfeed);
        }
    }

    fn verify(&mut self, stack: &[u64; STACK_WORDS]) -> Result<u64, String> {
        let salt = self.salt;
        let mut sum = 0u64;
        for (i, w) in self.slice().iter().enumerate() {
            if *w != word(i as u64, salt) {
                return Err(format!("memory word {i} (byte offset {}) is {:#x}, expected {:#x}", i * 8, w, word(i as u64, salt)));
            }
            sum = sum.wrapping_add(*w);
        }
        for (i, w) in self.heap.iter().enumerate() {
            if *w != word(i as u64, salt ^ 0xfeed) {
                return Err(format!("heap word {i} is wrong"));
            }
        }
        for (i, w) in stack.iter().enumerate() {
            if *w != word(i as u64, 0x57ac) {
                return Err(format!("stack word {i} is wrong"));
            }
        }
        Ok(sum)
    }

    /// First-touch latency of `n` distinct random pages of the working set.
    fn latency(&mut self, n: usize) -> Vec<u64> {
        time_touches(&mut self.map, n)
    }

    /// Page-aligned spans of the working set and the heap vector.
    fn spans(&self) -> [(usize, usize); 2] {
        let page = 4096usize;
        let heap_start = self.heap.as_ptr() as usize / page * page;
        let heap_end = (self.heap.as_ptr() as usize + self.heap.len() * 8).div_ceil(page) * page;
        [(self.map.addr() as usize, self.map.len()), (heap_start, heap_end - heap_start)]
    }

    /// Waits until every page of [`Memory::spans`] is resident; returns the
    /// time it saw that, how many polls it took and the bytes waited for.
    ///
    /// A page once resident stays so (no swap, the child frees nothing), so
    /// each poll goes on from the first page not yet seen resident and stops
    /// at the next missing one: the polls cost about one `mincore` of the
    /// whole span in all, and take little CPU from the stream they wait for.
    fn wait_resident(&self, patience: std::time::Duration) -> Result<(u64, u64, usize), Waited> {
        const CHUNK: usize = 2048;
        let spans = self.spans();
        let mut done = [0usize; 2];
        let mut vec = vec![0u8; CHUNK];
        let deadline = crate::now_ns() + patience.as_nanos() as u64;
        let mut polls = 0u64;
        let (mut last_resident, mut last_progress) = (0usize, crate::now_ns());
        /// No new page for this long: the stream stalled.
        const STALL_NS: u64 = 5_000_000_000;
        loop {
            polls += 1;
            for ((start, len), done) in spans.iter().zip(done.iter_mut()) {
                let pages = len / 4096;
                'span: while *done < pages {
                    let n = CHUNK.min(pages - *done);
                    let at = start + *done * 4096;
                    // `at` is page-aligned and the n pages are mapped.
                    if let Err(e) = mitosis_sys::mem::resident_pages(at as u64, n * 4096, &mut vec) {
                        return Err(Waited::Failed(e.to_string()));
                    }
                    for b in &vec[..n] {
                        if b & 1 == 0 {
                            break 'span;
                        }
                        *done += 1;
                    }
                }
            }
            let now = crate::now_ns();
            if spans.iter().zip(&done).all(|(s, d)| *d == s.1 / 4096) {
                return Ok((now, polls, spans.iter().map(|s| s.1).sum()));
            }
            let resident: usize = done.iter().sum();
            if resident != last_resident {
                (last_resident, last_progress) = (resident, now);
            }
            if now > deadline || now - last_progress > STALL_NS {
                return Err(Waited::Stalled { resident, total: spans.iter().map(|s| s.1 / 4096).sum() });
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }

    fn touch(&mut self, random: bool, limit: Option<usize>) -> u64 {
        let pages = limit.unwrap_or(usize::MAX).min(self.map.words() / 512);
        let mut order: Vec<usize> = (0..pages).collect();
        if random {
            let mut x = 0xdead_beafu64;
            for i in (1..pages).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        let t = crate::now_ns();
        for p in order {
            self.map.touch(p * 512, 0);
        }
        crate::now_ns() - t
    }
}

/// Touches `n` (at most all) distinct random pages of `map` one at a time
/// (a read and a write of one word each) and times each touch.
fn time_touches(map: &mut AnonMap, n: usize) -> Vec<u64> {
    let pages = map.words() / 512;
    let n = n.min(pages);
    let mut order: Vec<usize> = (0..pages).collect();
    let mut x = 0x1234_5678_9abc_def1u64 ^ crate::now_ns();
    for i in (1..pages).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order.truncate(n);
    // Allocated and written before timing: no fault of ours lands in a sample.
    let mut samples = vec![1u64; n];
    for (s, &p) in samples.iter_mut().zip(&order) {
        let t = crate::now_ns();
        map.touch(p * 512, 1);
        *s = crate::now_ns() - t;
    }
    samples
}

/// First-touch latency of `n` pages of a fresh anonymous mapping (local
/// zero-fill faults, no pager involved).
fn local_latency(n: usize) -> Vec<u64> {
    let bytes = n.max(1) * 4096;
    let mut map = AnonMap::new(bytes).unwrap_or_else(|e| panic!("mmap of {bytes} bytes: {e}"));
    time_touches(&mut map, n)
}

/// `latency <n> <p50> <p90> <p99> <max>` of samples in ns.
fn latency_line(samples: &[u64]) -> String {
    let v: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
    let p = |q: f64| crate::percentile(&v, q) as u64;
    format!("latency {} {} {} {} {}", v.len(), p(50.0), p(90.0), p(99.0), p(100.0))
}

/// Why [`Memory::wait_resident`] gave up.
enum Waited {
    /// No page came for a while (or the patience ran out): pages resident of total.
    Stalled { resident: usize, total: usize },
    Failed(String),
}

fn fork_time() -> u64 {
    let t = crate::now_ns();
    let pid = mitosis_sys::process::fork_exit_child().expect("fork");
    let dt = crate::now_ns() - t;
    mitosis_sys::process::wait_pid(pid).expect("waitpid");
    dt
}

/// Runs the `pattern` workload; returns the process exit status.
pub fn pattern(mb: usize, self_prepare: Option<(&std::path::Path, &str)>) -> i32 {
    let mut stack = [0u64; STACK_WORDS];
    for (i, w) in stack.iter_mut().enumerate() {
        *w = word(i as u64, 0x57ac);
    }
    let mut mem = Memory::new(mb);
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    if let Some((socket, id)) = self_prepare {
        match mitosis::fork_prepare(socket, id) {
            Ok(mitosis::Role::Parent(_)) => say("role parent".into()),
            Ok(mitosis::Role::Child(c)) => say(format!("role child {} {}", c.pid, c.seed_id)),
            Err(e) => {
                say(format!("prepare failed: {e}"));
                return 1;
            }
        }
    } else {
        say(format!("ready {}", std::process::id()));
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
            return 0;
        }
        let cmd: Vec<&str> = line.split_whitespace().collect();
        match cmd.as_slice() {
            ["verify"] => match mem.verify(std::hint::black_box(&stack)) {
                Ok(sum) => say(format!("verify ok {sum:#x}")),
                Err(e) => say(format!("verify FAILED {e}")),
            },
            ["mutate"] => {
                mem.fill(mem.salt + 1);
                say("mutated".into());
            }
            ["touch", how] => say(format!("touch {}", mem.touch(*how == "random", None))),
            ["touch", "seq", n] => say(format!("touch {}", mem.touch(false, n.parse().ok()))),
            ["fork"] => say(format!("fork {}", fork_time())),
            ["now"] => say(format!("now {}", crate::now_ns())),
            ["latency", n] => say(latency_line(&mem.latency(n.parse().unwrap_or(1000)))),
            ["local-latency", n] => say(latency_line(&local_latency(n.parse().unwrap_or(1000)))),
            ["resident"] => match mem.wait_resident(std::time::Duration::from_secs(120)) {
                Ok((t, polls, bytes)) => say(format!("resident {t} {polls} {bytes}")),
                Err(Waited::Stalled { resident, total }) => say(format!("resident STALLED {resident} {total}")),
                Err(Waited::Failed(e)) => say(format!("resident FAILED {e}")),
            },
            ["pid"] => say(format!("pid {}", std::process::id())),
            ["exit", n] => return n.parse().unwrap_or(1),
            _ => say(format!("unknown command {:?}", line.trim())),
        }
    }
}
