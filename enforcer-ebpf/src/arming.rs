//! Workload arming: under a policy with [`policy_flags::ARM_EXEC`], a container runtime's own
//! setup inside the covered cgroup (rootfs mounts, the session keyring, ...) is not the workload
//! and is not denied; the workload is every process from its first successful exec after it
//! entered the cgroup, and every descendant of a subject process.
//!
//! Only the setup processes are recorded, in `SETUP` (keyed by thread group id and the group
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
//! on) and when the process is freed (`sched_process_free`). An exec keeps a process setup only
//! while its root directory and mount namespace are still the ones it had when it became setup
//! (the runtimes re-execute themselves on the host side; they enter the container's root and
//! mount namespace before the entrypoint's exec, so no exec the image or workload chooses can
//! keep setup), and only an exec of the executable it ran then (runc re-executes itself through
//! a bind mount of its binary) or of a memfd (runc and crun re-execute a sealed memory copy of
//! themselves, the CVE-2019-5736 defence). A memfd is recognised by what the kernel says the
//! file is, a file on the kernel's internal shmem mount, never by its name.
//!
//! Whether a cgroup is covered is decided with the same per-depth index the hooks use, through
//! the cgroup's own ancestor array: no depth limit, and a failed read counts as covered.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{fentry, raw_tracepoint},
    programs::{FEntryContext, RawTracePointContext},
};
use enforcer_common::{
    KernelLayout, LEVEL_UNUSED, MAX_POLICY_LEVELS, Policy, ProcessKey, SetupState, policy_flags,
};

use crate::{
    layout,
    maps::{MOVES, POLICIES, POLICY_INDEX, SETUP},
};

/// `MNT_NS_INTERNAL` (fs/mount.h): `ERR_PTR(-EINVAL)`, the `mnt_ns` of the kernel's internal
/// mounts (`kern_mount`), such as the shmem mount every memfd lives on.
const MNT_NS_INTERNAL: u64 = -22i64 as u64;
/// `TMPFS_MAGIC`: shmem's superblock magic.
const TMPFS_MAGIC: u64 = 0x0102_1994;

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

/// The policy of `cgroup` or of its nearest ancestor with one: `Some(None)` when no policy
/// covers it, `None` when that could not be read (callers take it as covered: fail closed).
/// Uses the per-depth index like the hooks, reading the ancestor at each policy depth from the
/// cgroup's `ancestors` array, so it works at any depth.
#[inline(always)]
fn coverage(l: &KernelLayout, cgroup: *const u8) -> Option<Option<&'static Policy>> {
    let level = read_u32(cgroup, l.cgroup_level)?;
    let Some(index) = POLICY_INDEX.get(0) else {
        return Some(None);
    };
    let count = index.count as usize;
    let mut nearest: Option<(u32, &Policy)> = None;
    for i in 0..MAX_POLICY_LEVELS {
        if i >= count {
            break;
        }
        let slot = &index.slots[i];
        let depth = slot.level;
        if depth == LEVEL_UNUSED || depth > level || nearest.is_some_and(|(d, _)| d >= depth) {
            continue;
        }
        let ancestor = read_ptr(cgroup, l.cgroup_ancestors + depth * 8)?;
        let node = read_ptr(ancestor, l.cgroup_kn)?;
        let id = read_u64(node, l.kernfs_node_id)?;
        if !slot.may_hold(id) {
            continue;
        }
        // SAFETY: the value stays valid for this program run; updates replace whole entries.
        if let Some(policy) = unsafe { POLICIES.get(id) } {
            nearest = Some((depth, policy));
        }
    }
    Some(nearest.map(|(_, policy)| policy))
}

/// `cgroup` is known to be outside every policy.
#[inline(always)]
fn outside(l: &KernelLayout, cgroup: *const u8) -> bool {
    matches!(coverage(l, cgroup), Some(None))
}

/// `cgroup` is known to be covered by a policy that arms at exec.
#[inline(always)]
fn arms_at_exec(l: &KernelLayout, cgroup: *const u8) -> bool {
    matches!(coverage(l, cgroup), Some(Some(policy)) if policy.flags & policy_flags::ARM_EXEC != 0)
}

/// No policy anywhere: nothing to arm, and the hooks below cost one array lookup.
#[inline(always)]
pub fn no_policies() -> bool {
    POLICY_INDEX.get(0).is_none_or(|index| index.count == 0)
}

/// `task` is known to be outside every policy.
#[inline(always)]
pub fn outside_every_policy(task: *const u8) -> bool {
    let l = layout::get();
    task_cgroup(&l, task).is_some_and(|cgroup| outside(&l, cgroup))
}

/// Whether the process of `task` is a setup process.
#[inline(always)]
pub fn is_setup(task: *const u8) -> bool {
    let l = layout::get();
    // SAFETY: only presence is read.
    process_key(&l, task).is_some_and(|key| unsafe { SETUP.get(key) }.is_some())
}

/// Records `key` as a setup process that is `state`.
#[inline(always)]
fn make_setup(key: &ProcessKey, state: &SetupState) {
    // A failed insert leaves the process subject: fail closed.
    let _ = SETUP.insert(key, state, 0);
}

/// What `task` is now: its executable's inode (0 without one, a kernel thread), its root and
/// its mount namespace (0 where unreadable, which matches no later read of a live task).
#[inline(always)]
fn state_of(l: &KernelLayout, task: *const u8) -> SetupState {
    let exe = read_ptr(task, l.task_mm)
        .and_then(|mm| read_ptr(mm, l.mm_exe_file))
        .and_then(|file| read_ptr(file, l.file_inode))
        .map_or(0, |inode| inode as u64);
    let (root_mnt, root_dentry) = read_ptr(task, l.task_fs).map_or((0, 0), |fs| {
        (
            read_u64(fs, l.fs_root_mnt).unwrap_or(0),
            read_u64(fs, l.fs_root_dentry).unwrap_or(0),
        )
    });
    let mnt_ns = read_ptr(task, l.task_nsproxy)
        .and_then(|ns| read_u64(ns, l.nsproxy_mnt_ns))
        .unwrap_or(0);
    SetupState {
        exe,
        root_mnt,
        root_dentry,
        mnt_ns,
    }
}

/// True when the current process is a runtime's setup process (in `SETUP`). Called only for
/// callers covered by an arming policy whose action is not allow.
#[inline(always)]
pub fn current_is_setup() -> bool {
    // SAFETY: plain helper call; the pointer is only read through probe_read_kernel.
    is_setup(unsafe { bpf_get_current_task() } as *const u8)
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: the child's ids,
/// start time, namespaces and cgroup are set, and it has not run yet.
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
        // The child of a setup process is setup, as its parent was when it became setup: a
        // child that unshared its mount namespace (crun, runc's nsexec) leaves setup at its
        // next exec.
        // SAFETY: the value is copied out at once.
        if let Some(&state) = unsafe { SETUP.get(parent) } {
            make_setup(&key, &state);
            return None;
        }
    }
    // clone3(CLONE_INTO_CGROUP): the child starts in another cgroup than its parent's.
    let child_cgroup = task_cgroup(&l, child)?;
    let parent_cgroup = task_cgroup(&l, parent)?;
    if child_cgroup != parent_cgroup && arms_at_exec(&l, child_cgroup) && outside(&l, parent_cgroup)
    {
        make_setup(&key, &state_of(&l, child));
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
    if !arms_at_exec(&l, dst) {
        return None;
    }
    let key = process_key(&l, task)?;
    // A process moving itself never becomes setup.
    if (bpf_get_current_pid_tgid() >> 32) as u32 == key.tgid {
        return None;
    }
    // Nor does one that was under a policy before this move (or whose origin is unknown).
    if moved != Some(u64::from(key.tgid) << 32) {
        return None;
    }
    // Nor does one moved by a writer under any policy (a workload moving others), or by one
    // whose cgroup could not be read.
    // SAFETY: plain helper call; the pointer is only read through probe_read_kernel.
    let writer = unsafe { bpf_get_current_task() } as *const u8;
    if !outside(&l, task_cgroup(&l, writer)?) {
        return None;
    }
    make_setup(&key, &state_of(&l, task));
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
    let covered = task_cgroup(&l, task).is_none_or(|cgroup| !outside(&l, cgroup));
    let writer_tid = bpf_get_current_pid_tgid() as u32;
    let _ = MOVES.insert(writer_tid, (u64::from(tgid) << 32) | u64::from(covered), 0);
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, after
/// the point of no return, in the context of `p`: the process runs its new program, the
/// workload. Always runs (also with no policy), so no entry outlives its setup.
///
/// An exec keeps setup only while the process's root and mount namespace are the ones it had
/// when it became setup, and only for its own executable or a memfd (see the module
/// documentation): `runc init` re-executes itself twice (through a read-only bind mount of its
/// binary, then from a sealed memfd copy) after `runc` may already have moved it into the
/// container's cgroup, still on the host's side; crun runs from a memfd copy too.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn arm_exec(ctx: RawTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0) as *const u8;
    let bprm: u64 = ctx.arg(2);
    let l = layout::get();
    let Some(key) = process_key(&l, task) else {
        return 0;
    };
    // SAFETY: the value is copied out at once.
    let Some(&setup) = (unsafe { SETUP.get(key) }) else {
        return 0;
    };
    let now = state_of(&l, task);
    let same_place = now.root_mnt != 0
        && now.root_mnt == setup.root_mnt
        && now.root_dentry == setup.root_dentry
        && now.mnt_ns != 0
        && now.mnt_ns == setup.mnt_ns;
    if same_place && let Some(file) = read_ptr(bprm as *const u8, l.binprm_file) {
        let exe = read_ptr(file, l.file_inode).map_or(0, |inode| inode as u64);
        if (exe != 0 && exe == setup.exe) || is_memfd(&l, file) {
            return 0;
        }
    }
    let _ = SETUP.remove(key);
    0
}

/// Whether `file` is a memfd: a file on the kernel's internal shmem mount. No path reaches that
/// mount, so no file of an image or a workload's making is taken for one, whatever its name.
#[inline(always)]
fn is_memfd(l: &KernelLayout, file: *const u8) -> bool {
    let internal = read_ptr(file, l.file_mnt)
        .map(|vfsmount| vfsmount.wrapping_sub(l.mount_mnt as usize))
        .and_then(|mount| read_u64(mount, l.mount_mnt_ns))
        == Some(MNT_NS_INTERNAL);
    let shmem = read_ptr(file, l.file_inode)
        .and_then(|inode| read_ptr(inode, l.inode_sb))
        .and_then(|sb| read_u64(sb, l.sb_magic))
        == Some(TMPFS_MAGIC);
    internal && shmem
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
        let _ = SETUP.remove(ProcessKey {
            tgid,
            _pad: 0,
            start_time,
        });
    }
    0
}
