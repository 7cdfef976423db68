//! The current task and the system call it is in, read from its saved user registers: what every
//! hook and the syscall layer judge a call by.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, generated::bpf_task_pt_regs},
};
use enforcer_common::{TS_COMPAT, syscalls};

use crate::layout;

/// The system call the current task is in, from its saved user registers.
pub struct Syscall {
    /// x86_64 number (for a 32-bit caller, that of the same call: [`syscalls::ia32::native`]),
    /// -1 when the task is not in a system call or in a 32-bit one the enforcer does not guard.
    pub nr: i64,
    /// The arguments, in the call's order.
    pub args: [u64; 6],
    /// A 32-bit (ia32) system call.
    pub compat: bool,
    /// The current task (a BTF pointer: field loads from it are checked by the verifier).
    pub(crate) task: *const u8,
}

/// The current task, as a BTF pointer.
#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task_btf() }.cast()
}

/// Whether `task` is in a 32-bit (ia32) system call: a 32-bit program, or a 64-bit one using
/// `int $0x80`. Their call numbers mean other calls than the same x86_64 numbers.
#[inline(always)]
pub(crate) fn in_compat_syscall(task: *const u8) -> bool {
    let layout = layout::get();
    // SAFETY: `task` is a BTF task pointer and the offset is its thread_info.status, a u32.
    let status = unsafe { *task.add(layout.task_ti_status as usize).cast::<u32>() };
    status & TS_COMPAT != 0
}

impl Syscall {
    /// A call recorded earlier (the syscall layer's entry record), made by the current task.
    #[inline(always)]
    pub(crate) fn recorded(nr: i64, args: [u64; 6], compat: bool) -> Self {
        Self {
            nr,
            args,
            compat,
            task: current_task(),
        }
    }

    #[inline(always)]
    pub(crate) fn current() -> Self {
        let task = current_task();
        let compat = in_compat_syscall(task);
        // SAFETY: bpf_task_pt_regs returns a BTF-typed pointer to the task's saved user
        // registers; the verifier turns these field loads into fault-safe loads, far cheaper than
        // copying the whole struct with probe_read.
        unsafe {
            let regs = bpf_task_pt_regs(task.cast_mut().cast()) as *const pt_regs;
            let nr = (*regs).orig_rax as i64;
            if compat {
                // The ia32 calling convention: ebx, ecx, edx, esi, edi, ebp.
                const LOW: u64 = 0xffff_ffff;
                Self {
                    task,
                    nr: syscalls::ia32::native(nr),
                    args: [
                        (*regs).rbx & LOW,
                        (*regs).rcx & LOW,
                        (*regs).rdx & LOW,
                        (*regs).rsi & LOW,
                        (*regs).rdi & LOW,
                        (*regs).rbp & LOW,
                    ],
                    compat,
                }
            } else {
                Self {
                    task,
                    // An x32 call (bit 30) is judged as the x86_64 call it makes.
                    nr: syscalls::x32::native(nr),
                    args: [
                        (*regs).rdi,
                        (*regs).rsi,
                        (*regs).rdx,
                        (*regs).r10,
                        (*regs).r8,
                        (*regs).r9,
                    ],
                    compat,
                }
            }
        }
    }
}
