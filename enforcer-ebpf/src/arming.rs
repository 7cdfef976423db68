//! Workload arming: under a policy with [`policy_flags::ARM_EXEC`], a container runtime's own
//! setup inside the covered cgroup (rootfs mounts, the session keyring, ...) is not the workload
//! and is not denied; the workload is every process from its first successful exec after it
//! entered the cgroup, and every descendant of a subject process.
//!
//! Only the setup processes are recorded, in `EXEMPT` (keyed by thread group id and the group
//! leader's start time, so a reused pid never inherits an entry). A process missing from it,
//! never seen or evicted, is subject: fail closed. Entries are made only here, by the kernel's
//! own events, never by user space:
//! - `sched_process_fork`: the child of an exempt process is exempt; so is a child that
//!   `clone3(CLONE_INTO_CGROUP)` puts into an arming cgroup from a parent outside every policy
//!   (crun starts its container process that way);
//! - `cgroup_attach_task`: a process moved into an arming cgroup from outside every policy, by a
//!   writer outside every policy and not itself (`runc` moving `runc init` in), is exempt. A move
//!   by the process itself, by any process under a policy, or of a process that was under a
//!   policy before the move (an fentry program on the same function records where it came from)
//!   never exempts.
//!
//! Entries go at a successful exec (`sched_process_exec`: the process is the workload from then
//! on) and when the process is freed (`sched_process_free`). Two kinds of exec do not end the
//! setup, because the runtimes make them themselves before they set anything up: an exec of the
//! executable the process ran when it became exempt (runc re-executes itself through a bind
//! mount of its own binary), and an exec of a memfd (runc and crun re-execute a sealed memory
//! copy of themselves, the CVE-2019-5736 defence). Each entry holds that executable's inode.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{fentry, raw_tracepoint},
    programs::{FEntryContext, RawTracePointContext},
};
use enforcer_common::{KernelLayout, Policy, ProcessKey, policy_flags};

use crate::{
    layout,
    maps::{EXEMPT, MOVES, POLICIES, POLICY_INDEX},
};

/// Deepest cgroup nesting the coverage walk follows (cgroup v2 allows more, but no runtime
/// nests containers this deep; a deeper cgroup is judged by its 32 nearest ancestors).
const MAX_CGROUP_DEPTH: usize = 32;

/// A kernel pointer field of `base`, `None` when unreadable or NULL.
#[inline(always)]
fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    // SAFETY: bpf_probe_read_kernel of 8 bytes; a fault yields None.
    let ptr: u64 = unsafe { layout::read_kernel(base, offset) }?;
    (ptr != 0).then_some(ptr as *const u8)
}

#[inline(always)]
fn read_u32(base: *const u8, offset: u32) -> Option<u32> {
    // SAFETY: as above.
    unsafe { layout::read_kernel(base, offset) }
}

#[inline(always)]
fn read_u64(base: *const u8, offset: u32) -> Option<u64> {
    // SAFETY: as above.
    unsafe { layout::read_kernel(base, offset) }
}

/// The key of `task`'s process: its thread group id and its group leader's start time (a thread
/// shares its process's entry; after an exec the thread left is the leader, with the leader's
/// id and start time, so the key of a process never changes).
#[inline(always)]
fn process_key(l: &KernelLayout, task: *const u8) -> Option<ProcessKey> {
    let tgid = read_u32(task, l.task_tgid)?;
    let leader = read_ptr(task, l.task_group_leader)?;
    Some(ProcessKey {
        tgid,
        _pad: 0,
        start_time: read_u64(leader, l.task_start_time)?,
    })
}

/// The cgroup v2 (default hierarchy) cgroup of `task`.
#[inline(always)]
fn task_cgroup(l: &KernelLayout, task: *const u8) -> Option<*const u8> {
    let css_set = read_ptr(task, l.task_cgroups)?;
    read_ptr(css_set, l.css_set_dfl_cgrp)
}

/// The policy of `cgroup` or of its nearest ancestor with one.
#[inline(always)]
fn nearest_policy(l: &KernelLayout, cgroup: *const u8) -> Option<&'static Policy> {
    let mut node = read_ptr(cgroup, l.cgroup_kn)?;
    for _ in 0..MAX_CGROUP_DEPTH {
        let id = read_u64(node, l.kernfs_node_id)?;
        // SAFETY: the value stays valid for this program run; updates replace whole entries.
        if let Some(policy) = unsafe { POLICIES.get(id) } {
            return Some(policy);
        }
        node = read_ptr(node, l.kernfs_node_parent)?;
    }
    None
}

#[inline(always)]
fn arms_at_exec(policy: Option<&Policy>) -> bool {
    policy.is_some_and(|policy| policy.flags & policy_flags::ARM_EXEC != 0)
}

/// No policy anywhere: nothing to arm, and the hooks below cost one array lookup.
#[inline(always)]
fn no_policies() -> bool {
    POLICY_INDEX.get(0).is_none_or(|index| index.count == 0)
}

#[inline(always)]
fn exempt(key: &ProcessKey) -> bool {
    // SAFETY: only presence is read.
    unsafe { EXEMPT.get(key) }.is_some()
}

/// Records `key` as a setup process that runs the executable `exe` (an inode address).
#[inline(always)]
fn make_exempt(key: &ProcessKey, exe: u64) {
    // A failed insert leaves the process subject: fail closed.
    let _ = EXEMPT.insert(key, exe, 0);
}

/// The inode of the executable `task` runs (0 when it has none, a kernel thread).
#[inline(always)]
fn exe_inode(l: &KernelLayout, task: *const u8) -> u64 {
    read_ptr(task, l.task_mm)
        .and_then(|mm| read_ptr(mm, l.mm_exe_file))
        .and_then(|file| read_ptr(file, l.file_inode))
        .map_or(0, |inode| inode as u64)
}

/// True when the current process is a runtime's setup process (in `EXEMPT`). Called only for
/// callers covered by an arming policy whose action is not allow.
#[inline(always)]
pub fn current_is_setup() -> bool {
    let l = layout::get();
    // SAFETY: plain helper call; the pointer is only read through probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    process_key(&l, task).is_some_and(|key| exempt(&key))
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: the child's ids,
/// start time and cgroup are set, and it has not run yet.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn arm_fork(ctx: RawTracePointContext) -> i32 {
    if no_policies() {
        return 0;
    }
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let _ = on_fork(parent as *const u8, child as *const u8);
    0
}

#[inline(always)]
fn on_fork(parent: *const u8, child: *const u8) -> Option<()> {
    let l = layout::get();
    let pid = read_u32(child, l.task_pid)?;
    let tgid = read_u32(child, l.task_tgid)?;
    if pid != tgid {
        // A new thread: its process's entry (or absence of one) covers it.
        return None;
    }
    let key = ProcessKey {
        tgid,
        _pad: 0,
        start_time: read_u64(child, l.task_start_time)?,
    };
    if let Some(parent) = process_key(&l, parent) {
        // SAFETY: the value is copied out at once.
        if let Some(&exe) = unsafe { EXEMPT.get(parent) } {
            make_exempt(&key, exe);
            return None;
        }
    }
    // clone3(CLONE_INTO_CGROUP): the child starts in another cgroup than its parent's.
    let child_cgroup = task_cgroup(&l, child)?;
    let parent_cgroup = task_cgroup(&l, parent)?;
    if child_cgroup != parent_cgroup
        && arms_at_exec(nearest_policy(&l, child_cgroup))
        && nearest_policy(&l, parent_cgroup).is_none()
    {
        make_exempt(&key, exe_inode(&l, child));
    }
    None
}

/// `cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
/// bool threadgroup)`, after a successful migration, in the writer's context.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn arm_attach(ctx: RawTracePointContext) -> i32 {
    if no_policies() {
        return 0;
    }
    let dst: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(2);
    let _ = on_attach(dst as *const u8, task as *const u8);
    0
}

#[inline(always)]
fn on_attach(dst: *const u8, task: *const u8) -> Option<()> {
    let l = layout::get();
    let writer_tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out at once.
    let moved = unsafe { MOVES.get(writer_tid) }.copied();
    let _ = MOVES.remove(writer_tid);
    if !arms_at_exec(nearest_policy(&l, dst)) {
        return None;
    }
    let key = process_key(&l, task)?;
    // A process moving itself never becomes exempt.
    if (bpf_get_current_pid_tgid() >> 32) as u32 == key.tgid {
        return None;
    }
    // Nor does one that was under a policy before this move (or whose origin is unknown).
    if moved != Some(u64::from(key.tgid) << 32) {
        return None;
    }
    // Nor does one moved by a writer under any policy (a workload moving others).
    // SAFETY: plain helper call; the pointer is only read through probe_read_kernel.
    let writer = unsafe { bpf_get_current_task() } as *const u8;
    if nearest_policy(&l, task_cgroup(&l, writer)?).is_some() {
        return None;
    }
    make_exempt(&key, exe_inode(&l, task));
    None
}

/// `cgroup_attach_task(struct cgroup *dst_cgrp, struct task_struct *leader, bool threadgroup)`
/// on entry, before the migration, in the writer's context: records for `arm_attach` whether the
/// process was under a policy where it comes from.
#[fentry(function = "cgroup_attach_task")]
pub fn arm_move(ctx: FEntryContext) -> i32 {
    if no_policies() {
        return 0;
    }
    let leader: u64 = ctx.arg(1);
    let task = leader as *const u8;
    let l = layout::get();
    let Some(tgid) = read_u32(task, l.task_tgid) else {
        return 0;
    };
    // Unknown origin counts as covered: fail closed.
    let covered = task_cgroup(&l, task).is_none_or(|cgroup| nearest_policy(&l, cgroup).is_some());
    let writer_tid = bpf_get_current_pid_tgid() as u32;
    let _ = MOVES.insert(writer_tid, (u64::from(tgid) << 32) | u64::from(covered), 0);
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, after
/// the point of no return: the process runs its new program, the workload. Always runs (also with
/// no policy), so no entry outlives its setup.
///
/// Two execs of a setup process do not end its setup: of the executable it ran when it became
/// exempt, and of a memfd. `runc init` re-executes itself twice (through a read-only bind mount
/// of its binary, then from a sealed memfd copy) after `runc` may already have moved it into the
/// container's cgroup; crun runs from a memfd copy too. A workload never runs in a setup process
/// before the runtime's exec of the entrypoint, so only the runtime makes these execs.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn arm_exec(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let bprm: u64 = ctx.arg(2);
    let l = layout::get();
    let Some(key) = process_key(&l, task as *const u8) else {
        return 0;
    };
    // SAFETY: the value is copied out at once.
    let Some(&setup_exe) = (unsafe { EXEMPT.get(key) }) else {
        return 0;
    };
    if let Some(file) = read_ptr(bprm as *const u8, l.binprm_file) {
        let exe = read_ptr(file, l.file_inode).map_or(0, |inode| inode as u64);
        if (exe != 0 && exe == setup_exe) || is_memfd(&l, file) {
            return 0;
        }
    }
    let _ = EXEMPT.remove(key);
    0
}

/// Whether `file` is a memfd: its dentry is named `memfd:<name>`.
#[inline(always)]
fn is_memfd(l: &KernelLayout, file: *const u8) -> bool {
    let name = read_ptr(file, l.file_dentry).and_then(|dentry| read_ptr(dentry, l.dentry_name));
    let Some(name) = name else {
        return false;
    };
    // SAFETY: 6 bytes of a NUL-terminated name of at least one byte, plus what follows it in
    // the same allocation (dentry names are inline or kmalloc'ed, at least 8 bytes); a fault
    // yields None.
    let prefix: Option<[u8; 6]> = unsafe { layout::read_kernel(name, 0) };
    prefix == Some(*b"memfd:")
}

/// `sched_process_free(struct task_struct *p)`: a process's entry goes with its group leader.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn arm_free(ctx: RawTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0) as *const u8;
    let l = layout::get();
    let (Some(pid), Some(tgid), Some(start_time)) = (
        read_u32(task, l.task_pid),
        read_u32(task, l.task_tgid),
        read_u64(task, l.task_start_time),
    ) else {
        return 0;
    };
    if pid == tgid {
        let _ = EXEMPT.remove(ProcessKey {
            tgid,
            _pad: 0,
            start_time,
        });
    }
    0
}
