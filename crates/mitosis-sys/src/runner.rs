//! The table runner: position-independent machine code that executes a table
//! of syscalls inside the child and stops with `int3`.
//!
//! Each table entry is 64 bytes: `nr, a0..a5, result` (u64 each). The runner
//! starts with `rbx` pointing at the first entry, stores each result in place,
//! and stops at the first entry whose `nr` is `u64::MAX` or whose result is an
//! error (`-4095..=-1`), leaving `rbx` on that entry. It needs no stack.
//!
//! The code runs in another process (the restore writes it into a child and
//! points the child's `rip` at it); here it is only bytes to copy.

use std::arch::global_asm;

global_asm!(
    ".globl mitosis_table_runner_start",
    ".globl mitosis_table_runner_end",
    "mitosis_table_runner_start:",
    "2:",
    "mov rax, [rbx]",
    "cmp rax, -1",
    "je 3f",
    "mov rdi, [rbx + 8]",
    "mov rsi, [rbx + 16]",
    "mov rdx, [rbx + 24]",
    "mov r10, [rbx + 32]",
    "mov r8, [rbx + 40]",
    "mov r9, [rbx + 48]",
    "syscall",
    "mov [rbx + 56], rax",
    "cmp rax, -4095",
    "jae 3f",
    "add rbx, 64",
    "jmp 2b",
    "3:",
    "int3",
    "mitosis_table_runner_end:",
);

extern "C" {
    static mitosis_table_runner_start: u8;
    static mitosis_table_runner_end: u8;
}

/// The runner's machine code.
pub fn code() -> &'static [u8] {
    // SAFETY: both symbols are labels in our own .text, start before end, and
    // the bytes between them are the runner's instructions, mapped for the
    // life of the program.
    unsafe {
        let s = &raw const mitosis_table_runner_start;
        let e = &raw const mitosis_table_runner_end;
        std::slice::from_raw_parts(s, e.addr() - s.addr())
    }
}

/// Size of one table entry.
pub const ENTRY: usize = 64;

/// A syscall table under construction.
#[derive(Default)]
pub struct Table {
    pub entries: Vec<([u64; 7], String)>,
}

impl Table {
    /// Adds a syscall; `what` names it in error messages.
    pub fn push(&mut self, nr: i64, args: [u64; 6], what: impl Into<String>) {
        let mut e = [0u64; 7];
        e[0] = crate::unsigned(nr);
        e[1..].copy_from_slice(&args);
        self.entries.push((e, what.into()));
    }

    /// Encodes the table with its end marker.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.entries.len() + 1) * ENTRY);
        for (e, _) in &self.entries {
            for w in e {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&0u64.to_ne_bytes());
        }
        out.extend_from_slice(&u64::MAX.to_ne_bytes());
        out.resize(out.len() + ENTRY - 8, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner is real code ending in int3, and tables end with the marker.
    /// (Executing it is covered by every resume in the end-to-end tests.)
    #[test]
    fn runner_shape_and_table_encoding() {
        let code = code();
        assert!(code.len() > 20 && code.len() < 200);
        assert_eq!(*code.last().unwrap(), 0xcc, "ends with int3");
        let mut t = Table::default();
        t.push(libc::SYS_getpid, [0; 6], "getpid");
        t.push(libc::SYS_close, [u64::MAX >> 2, 0, 0, 0, 0, 0], "close(bad)");
        t.push(libc::SYS_getpid, [0; 6], "never");
        let table = t.encode();
        assert_eq!(table.len(), 4 * ENTRY);
        let read = |i: usize, w: usize| u64::from_ne_bytes(table[i * ENTRY + w * 8..][..8].try_into().unwrap());
        assert_eq!(read(0, 0), crate::unsigned(libc::SYS_getpid));
        assert_eq!(read(3, 0), u64::MAX);
    }
}
