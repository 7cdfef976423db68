//! Tamper protection, always on and whatever a policy's operations: no process in a covered
//! cgroup may switch the enforcer off or get around it through the kernel's side doors.
//!
//! - `bpf_map`, `bpf_prog`: every file descriptor for a map or program is made through these
//!   hooks, by id, by pin or by any other route; the enforcer's own ([`PROTECTED`], kernel ids
//!   user space records from its pins) are refused.
//! - `bpf`: links get no such hook, so the commands that reach one are judged by the link's id
//!   (`BPF_LINK_GET_FD_BY_ID`; `BPF_LINK_UPDATE` and `BPF_LINK_DETACH` through the descriptor
//!   they name); and no covered process may load a BPF LSM program or an fmod_ret program,
//!   which could override the enforcer's verdicts.
//! - `inode_unlink`, `inode_rmdir`, `inode_rename` (in `mount`): the enforcer's pins, whose
//!   removal would release its links, cannot be removed or renamed.
//! - `ptrace_access_check`, `ptrace_traceme`: a subject process cannot trace, write the memory
//!   of, or reach the root, working directory and descriptors of a runtime's setup process
//!   (which the policy does not bind, and which is still on the host's side), and a setup
//!   process cannot offer itself to a subject tracer.
//!
//! Each refusal is an event of [`kind::TAMPER`], counted under the policy's tamper slot.
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::lsm,
    programs::LsmContext,
};
use enforcer_common::{Action, Hook, TAMPER_SLOT, kind, protect};

use crate::{
    arming,
    decide::{Decision, Verdict, nearest_policy},
    emit::{NO_OPERATION, Outcome, Record, emit},
    layout,
    maps::{COUNTERS, PROTECTED},
    task::Syscall,
};

const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_UPDATE: i32 = 29;
const BPF_LINK_GET_FD_BY_ID: i32 = 30;
const BPF_LINK_DETACH: i32 = 34;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_MODIFY_RETURN: u32 = 26;
/// `union bpf_attr` offsets: `prog_type` and `expected_attach_type` of `BPF_PROG_LOAD`; the
/// first word of the `*_GET_FD_BY_ID` (the id) and link commands (the link's descriptor).
const ATTR_PROG_TYPE: usize = 0;
const ATTR_EXPECTED_ATTACH_TYPE: usize = 68;
const ATTR_FIRST: usize = 0;
/// `PTRACE_MODE_READ` (`/proc/PID/root`, `cwd`, `fd/N`, `environ`, `maps`) and
/// `PTRACE_MODE_ATTACH` (tracing, `/proc/PID/mem`, `process_vm_writev`, `pidfd_getfd`).
const PTRACE_MODE_READ: u32 = 0x01;
const PTRACE_MODE_ATTACH: u32 = 0x02;
/// Set by checks that only decide what to show (`ps` reading `/proc/PID/stat`): refused
/// quietly, as the kernel's own LSMs do not audit them either.
const PTRACE_MODE_NOAUDIT: u32 = 0x04;

#[inline(always)]
fn read<T>(base: *const u8, offset: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }.ok()
}

#[inline(always)]
fn protected(kind: u32, id: u32) -> bool {
    // SAFETY: only presence is read.
    unsafe { PROTECTED.get(protect::key(kind, id)) }.is_some()
}

/// Refuses a covered caller's attempt: counts it, reports it, and returns the LSM's refusal.
#[inline(always)]
pub(crate) fn refuse(policy_cgroup_id: u64, flags: u32, hook: Hook, hook_arg: i64) -> i32 {
    let decision = Decision {
        action: Action::Deny,
        policy_cgroup_id,
        flags,
    };
    if let Some(counters) = COUNTERS.get_ptr_mut(policy_cgroup_id) {
        // SAFETY: per-CPU value of a live entry; programs do not migrate CPUs while running.
        unsafe { (*counters).by_action[Action::Deny as usize][TAMPER_SLOT] += 1 };
    }
    let record = Record {
        kind: kind::TAMPER,
        op: NO_OPERATION,
        hook,
        hook_arg,
    };
    emit(
        &record,
        &decision,
        &Outcome::lsm(Verdict::Deny),
        &Syscall::current(),
        aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64,
    );
    Verdict::Deny.retval()
}

/// Refuses when the caller is covered by any policy; 0 otherwise.
#[inline(always)]
fn refuse_if_covered(hook: Hook, hook_arg: i64) -> i32 {
    match nearest_policy() {
        Some((id, policy)) => refuse(id, policy.flags, hook, hook_arg),
        None => 0,
    }
}

/// Whether `dentry` is on the bpffs that holds the enforcer's pins.
#[inline(always)]
pub(crate) fn on_protected_fs(dentry: *const u8) -> bool {
    let l = layout::get();
    read::<u64>(dentry, l.dentry_sb as usize)
        .and_then(|sb| read::<u32>(sb as *const u8, l.sb_dev as usize))
        .is_some_and(|dev| protected(protect::BPFFS_DEV, dev))
}

/// The object behind the current task's descriptor `fd` (`file->private_data`).
#[inline(always)]
fn fd_object(fd: u32) -> Option<*const u8> {
    let l = layout::get();
    // SAFETY: plain helper call; the pointer is only read through probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files = read::<u64>(task, l.task_files as usize)? as *const u8;
    let fdt = read::<u64>(files, l.files_fdt as usize)? as *const u8;
    if fd >= read::<u32>(fdt, l.fdt_max_fds as usize)? {
        return None;
    }
    let fds = read::<u64>(fdt, l.fdt_fd as usize)? as *const u8;
    let file = read::<u64>(fds, fd as usize * 8)? as *const u8;
    read::<u64>(file, l.file_private_data as usize).map(|p| p as *const u8)
}

#[inline(never)]
fn arg_3(ctx: &LsmContext) -> i32 {
    ctx.arg(3)
}

#[inline(never)]
fn arg_4(ctx: &LsmContext) -> i32 {
    ctx.arg(4)
}

/// `bpf(cmd, attr, size[, kernel])`.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    // The previous verdict follows the hook's arguments, three before 6.16 and four since. Two
    // functions, so the compiler cannot fold the two loads into one at a computed offset (the
    // verifier accepts only constant offsets into the context); the branch the running kernel
    // does not take is dead code to the verifier, which sees the layout as constants.
    let previous: i32 = if layout::get().lsm_bpf_args == 4 {
        arg_4(&ctx)
    } else {
        arg_3(&ctx)
    };
    if previous != 0 {
        return previous;
    }
    let cmd: i32 = ctx.arg(0);
    if !matches!(
        cmd,
        BPF_PROG_LOAD | BPF_LINK_UPDATE | BPF_LINK_GET_FD_BY_ID | BPF_LINK_DETACH
    ) {
        return 0;
    }
    let attr: *const u8 = ctx.arg(1);
    let hook_arg = |id: u32| (i64::from(cmd) << 32) | i64::from(id);
    match cmd {
        BPF_PROG_LOAD => {
            let prog_type: u32 = read(attr, ATTR_PROG_TYPE).unwrap_or(0);
            let attach: u32 = read(attr, ATTR_EXPECTED_ATTACH_TYPE).unwrap_or(0);
            if prog_type == BPF_PROG_TYPE_LSM
                || (prog_type == BPF_PROG_TYPE_TRACING && attach == BPF_MODIFY_RETURN)
            {
                return refuse_if_covered(Hook::Bpf, hook_arg(prog_type));
            }
            0
        }
        BPF_LINK_GET_FD_BY_ID => {
            let id: u32 = read(attr, ATTR_FIRST).unwrap_or(0);
            if protected(protect::LINK, id) {
                return refuse_if_covered(Hook::Bpf, hook_arg(id));
            }
            0
        }
        _ => {
            let fd: u32 = read(attr, ATTR_FIRST).unwrap_or(u32::MAX);
            let l = layout::get();
            let id = fd_object(fd)
                .and_then(|link| read::<u32>(link, l.bpf_link_id as usize))
                .unwrap_or(0);
            if protected(protect::LINK, id) {
                return refuse_if_covered(Hook::Bpf, hook_arg(id));
            }
            0
        }
    }
}

/// `bpf_map(map, fmode)`: a file descriptor for `map` is being made.
#[lsm(hook = "bpf_map")]
pub fn bpf_map(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let map: *const u8 = ctx.arg(0);
    let id: u32 = read(map, layout::get().bpf_map_id as usize).unwrap_or(0);
    if protected(protect::MAP, id) {
        return refuse_if_covered(Hook::BpfMap, i64::from(id));
    }
    0
}

/// `bpf_prog(prog)`: a file descriptor for `prog` is being made.
#[lsm(hook = "bpf_prog")]
pub fn bpf_prog(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let prog: *const u8 = ctx.arg(0);
    let l = layout::get();
    let id = read::<u64>(prog, l.bpf_prog_aux as usize)
        .and_then(|aux| read::<u32>(aux as *const u8, l.bpf_prog_aux_id as usize))
        .unwrap_or(0);
    if protected(protect::PROG, id) {
        return refuse_if_covered(Hook::BpfProg, i64::from(id));
    }
    0
}

/// `ptrace_access_check(child, mode)`: ptrace attach, `/proc/PID/mem`, `process_vm_*`,
/// `pidfd_getfd` on `child`.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let mode: u32 = ctx.arg(1);
    if mode & (PTRACE_MODE_READ | PTRACE_MODE_ATTACH) == 0 || arming::no_policies() {
        return 0;
    }
    let child: *const u8 = ctx.arg(0);
    if !arming::is_setup(child) || arming::current_is_setup() {
        return 0;
    }
    // A setup process still has the host's root, working directory and descriptors (the
    // runtime's): reading them through /proc is as much a way out as writing its memory.
    let Some((id, policy)) = nearest_policy() else {
        return 0;
    };
    if mode & PTRACE_MODE_NOAUDIT != 0 {
        return Verdict::Deny.retval();
    }
    let l = layout::get();
    let pid: u32 = read(child, l.task_tgid as usize).unwrap_or(0);
    refuse(id, policy.flags, Hook::PtraceAccessCheck, i64::from(pid))
}

/// `ptrace_traceme(parent)`: the current task asks to be traced by `parent`.
#[lsm(hook = "ptrace_traceme")]
pub fn ptrace_traceme(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    if arming::no_policies() || !arming::current_is_setup() {
        return 0;
    }
    let parent: *const u8 = ctx.arg(0);
    if arming::is_setup(parent) || arming::outside_every_policy(parent) {
        return 0;
    }
    let l = layout::get();
    let pid: u32 = read(parent, l.task_tgid as usize).unwrap_or(0);
    // The setup process is the caller: charge its own policy.
    refuse_if_covered(Hook::PtraceTraceme, i64::from(pid))
}
