//! A zram swap device that this daemon owns (`mitosis daemon --zram-swap
//! MIB`): the swap of the `tmo` policy, whose controller has the kernel
//! reclaim instances' memory ([`crate::memory`]).
//!
//! The machine has no disk swap; zram is compressed memory (lz4 here), so
//! what an instance swaps out still takes local memory, only less (`bench
//! faasmem` counts the devices' `mm_stat` as the `tmo` arm's). Swap is
//! the host's: every process may use it, which is why the daemon's cgroup subtree sets
//! `memory.swappiness` 0 for every container but those it lets swap
//! (`mitosis_container::ContainerCgroup::allow_swap`).
//!
//! The device lives as long as the daemon: dropping it turns the swap off
//! (its pages come back into memory) and removes the device, and the janitor
//! does the same if the daemon is killed.

use std::path::PathBuf;
use std::process::Command;

/// A zram device swapped on, removed when dropped.
#[derive(Debug)]
pub struct ZramSwap {
    device: u32,
}

/// Why the swap device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("cannot add a zram device (is the zram module there? /sys/class/zram-control)")]
    HotAdd(#[source] std::io::Error),
    #[error("cannot set up /dev/zram{device}: {what}")]
    Setup { device: u32, what: String },
}

fn sys(device: u32) -> PathBuf {
    PathBuf::from(format!("/sys/block/zram{device}"))
}

fn dev(device: u32) -> String {
    format!("/dev/zram{device}")
}

/// Runs `program args`; its stderr when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {} ({})", args.join(" "), String::from_utf8_lossy(&out.stderr).trim(), out.status))
    }
}

impl ZramSwap {
    /// Adds a zram device of `bytes` (lz4 where the kernel has it), makes it
    /// swap and turns it on.
    pub fn create(bytes: u64) -> Result<ZramSwap, SwapError> {
        let device: u32 = std::fs::read_to_string("/sys/class/zram-control/hot_add")
            .map_err(SwapError::HotAdd)?
            .trim()
            .parse()
            .map_err(|e| SwapError::HotAdd(std::io::Error::other(format!("hot_add answered no device number: {e}"))))?;
        // From here on, dropping it removes the device.
        let swap = ZramSwap { device };
        let fail = |what: String| SwapError::Setup { device, what };
        // The kernel's default algorithm where lz4 is not built in.
        let _ = std::fs::write(sys(device).join("comp_algorithm"), "lz4");
        std::fs::write(sys(device).join("disksize"), bytes.to_string()).map_err(|e| fail(format!("disksize {bytes}: {e}")))?;
        run("mkswap", &[&dev(device)]).map_err(fail)?;
        run("swapon", &[&dev(device)]).map_err(fail)?;
        Ok(swap)
    }

    pub fn device(&self) -> u32 {
        self.device
    }
}

impl Drop for ZramSwap {
    fn drop(&mut self) {
        if let Err(e) = remove(self.device) {
            tracing::warn!(device = self.device, error = %e, "cannot remove the zram swap device");
        }
    }
}

/// Turns swap device `device` off (its pages come back) and removes it.
pub fn remove(device: u32) -> Result<(), String> {
    // Not on (a failed set-up): swapoff fails, the rest still goes.
    let swapped_on = std::fs::read_to_string("/proc/swaps").unwrap_or_default().lines().any(|l| l.split_whitespace().next() == Some(&dev(device)));
    if swapped_on {
        run("swapoff", &[&dev(device)])?;
    }
    std::fs::write(sys(device).join("reset"), "1").map_err(|e| format!("resetting zram{device}: {e}"))?;
    std::fs::write("/sys/class/zram-control/hot_remove", device.to_string()).map_err(|e| format!("removing zram{device}: {e}"))
}
