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
//! | `fork`          | `fork <ns>`: a local fork()+exit+wait, parent side time     |
//! | `now`           | `now <CLOCK_MONOTONIC ns>`                                  |
//! | `pid`           | `pid <pid>`                                                 |
//! | `exit <n>`      | exits with status n                                         |
//!
//! With `--self-prepare ID`, it prepares itself through the library right after
//! filling memory and prints `role parent` or `role child <pid>` first.
//! It never starts a thread.

use std::io::{BufRead, Write};

const STACK_WORDS: usize = 512;

fn word(i: u64, salt: u64) -> u64 {
    (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ salt
}

struct Memory {
    base: *mut u64,
    words: usize,
    heap: Vec<u64>,
    salt: u64,
}

impl Memory {
    fn new(mb: usize) -> Memory {
        let bytes = mb.max(1) << 20;
        // SAFETY: anonymous private mapping; checked below.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(p != libc::MAP_FAILED, "mmap of {mb} MiB failed");
        let mut m = Memory { base: p.cast(), words: bytes / 8, heap: vec![0; 100_000], salt: 1 };
        m.fill(1);
        m
    }

    fn slice(&mut self) -> &mut [u64] {
        // SAFETY: the mapping holds `words` u64s for the life of the process.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.words) }
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

    fn touch(&mut self, random: bool) -> u64 {
        let pages = self.words / 512;
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
        let base = self.base;
        let t = crate::now_ns();
        for p in order {
            // SAFETY: p < pages, so the word is inside the mapping.
            unsafe {
                let w = base.add(p * 512);
                std::ptr::write_volatile(w, std::ptr::read_volatile(w));
            }
        }
        crate::now_ns() - t
    }
}

fn fork_time() -> u64 {
    let t = crate::now_ns();
    // SAFETY: the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(0) };
    }
    let dt = crate::now_ns() - t;
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
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
            ["touch", how] => say(format!("touch {}", mem.touch(*how == "random"))),
            ["fork"] => say(format!("fork {}", fork_time())),
            ["now"] => say(format!("now {}", crate::now_ns())),
            ["pid"] => say(format!("pid {}", std::process::id())),
            ["exit", n] => return n.parse().unwrap_or(1),
            _ => say(format!("unknown command {:?}", line.trim())),
        }
    }
}
