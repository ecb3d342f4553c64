//! The vDSO of the running kernel: where it sits in this process, where a
//! `syscall` instruction is inside it (the gadget used to inject syscalls), and
//! a fingerprint to compare kernels across hosts.

use crate::procfs::{parse_maps, MapsEntry};

/// This kernel's vDSO block (`[vvar]`, `[vvar_vclock]`, `[vdso]`) in the current process.
#[derive(Debug, Clone)]
pub struct VdsoInfo {
    /// The block's mappings in address order.
    pub parts: Vec<(String, u64, u64)>,
    /// Offset of a `syscall` instruction from the start of `[vdso]`.
    pub gadget_offset: u64,
    /// FNV-1a of the `[vdso]` code pages.
    pub hash: u64,
}

pub fn is_vdso_part(name: &str) -> bool {
    matches!(name, "[vvar]" | "[vvar_vclock]" | "[vdso]")
}

/// Picks the vDSO block out of a process's maps.
pub fn block_of(maps: &[MapsEntry]) -> Vec<(String, u64, u64)> {
    maps.iter().filter(|m| is_vdso_part(&m.name)).map(|m| (m.name.clone(), m.start, m.end)).collect()
}

impl VdsoInfo {
    /// Reads this process's vDSO.
    pub fn of_self() -> Result<VdsoInfo, String> {
        let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let maps = parse_maps(&text)?;
        let parts = block_of(&maps);
        let (_, start, end) =
            parts.iter().find(|p| p.0 == "[vdso]").cloned().ok_or("this process has no [vdso] mapping")?;
        // SAFETY: [vdso] is mapped readable in our own address space for our whole lifetime.
        let code = unsafe { std::slice::from_raw_parts(start as *const u8, crate::usize_of(end - start)) };
        let gadget_offset = code
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or("no syscall instruction in the vDSO")? as u64;
        let hash = code.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3));
        Ok(VdsoInfo { parts, gadget_offset, hash })
    }

    /// Start and end of the whole block.
    pub fn span(&self) -> (u64, u64) {
        (self.parts.first().map(|p| p.1).unwrap_or(0), self.parts.last().map(|p| p.2).unwrap_or(0))
    }

    /// Sizes of the block's parts, to compare layouts between processes.
    pub fn layout(&self) -> Vec<(String, u64)> {
        self.parts.iter().map(|p| (p.0.clone(), p.2 - p.1)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_syscall_gadget() {
        let v = VdsoInfo::of_self().unwrap();
        assert!(v.parts.iter().any(|p| p.0 == "[vdso]"));
        let (s, e) = v.span();
        assert!(e > s);
    }
}
