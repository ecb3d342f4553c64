//! The one thread that forks children.
//!
//! Children are forked by a thread that lives as long as the daemon, because a
//! child's `PR_SET_PDEATHSIG` fires when the *thread* that forked it exits: so
//! a child dies with its daemon (whose pager it depends on) and never earlier.

use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

/// Work run in the forked child; it must only make raw syscalls and never return.
pub type ChildMain = Box<dyn FnOnce() + Send>;

struct Job {
    child_main: ChildMain,
    reply: Sender<Result<i32, std::io::Error>>,
}

pub struct Spawner {
    jobs: Mutex<Sender<Job>>,
}

impl Spawner {
    pub fn start() -> Spawner {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for job in rx {
                    // SAFETY: the child only runs `child_main`, which makes raw syscalls
                    // on data prepared before the fork, and then _exits.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        (job.child_main)();
                        // SAFETY: leaving the child without running any destructor.
                        unsafe { libc::_exit(99) };
                    }
                    let r = if pid < 0 { Err(std::io::Error::last_os_error()) } else { Ok(pid) };
                    let _ = job.reply.send(r);
                }
            })
            .expect("spawner thread");
        Spawner { jobs: Mutex::new(tx) }
    }

    /// Forks a child that runs `child_main`; returns its pid.
    pub fn spawn(&self, child_main: ChildMain) -> Result<i32, std::io::Error> {
        let (tx, rx) = channel();
        self.jobs
            .lock()
            .unwrap()
            .send(Job { child_main, reply: tx })
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        rx.recv().map_err(|_| std::io::Error::other("spawner thread is gone"))?
    }
}
