//! Types shared by the BPF programs and user space.
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]`, integer-only, with explicit
//! padding and a compile-time size check, so both sides agree on the layout without BTF.
//! A change to any layout here bumps [`ABI_VERSION`], which names the pin directory: a newer build
//! never silently reuses a map of an older layout.
#![no_std]

/// Version of the map and event layouts below. Part of the pin path (`/sys/fs/bpf/enforcer/v1`).
pub const ABI_VERSION: u32 = 1;

/// Room for operations in fixed-size arrays. Adding an operation below this count does not change
/// any layout (and so does not bump [`ABI_VERSION`]).
pub const OP_SLOTS: usize = 16;
/// The [`Counters`] column that no operation takes: under `deny` it counts refused tamper
/// attempts ([`TAMPER_SLOT`]), under `allow` the events the policy's event budget suppressed
/// ([`SUPPRESSED_SLOT`]).
pub const TAMPER_SLOT: usize = OP_SLOTS - 1;
pub const SUPPRESSED_SLOT: usize = OP_SLOTS - 1;

/// Most distinct cgroup depths that may hold a policy at once. The BPF programs look up one
/// ancestor per depth that holds a policy, so the cost for any caller is bounded by this, not by
/// its own depth.
pub const MAX_POLICY_LEVELS: usize = 7;

/// An operation a policy can act on. The discriminant indexes [`Policy::actions`] and [`Counters`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Mount = 0,
    Keyctl = 1,
    Settime = 2,
}

/// What a policy does with an operation.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    #[default]
    Allow = 0,
    /// Permit and report.
    Audit = 1,
    /// Refuse with EPERM and report.
    Deny = 2,
    /// Send SIGKILL to the caller, refuse with EPERM and report.
    Kill = 3,
}

impl Action {
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Allow),
            1 => Some(Self::Audit),
            2 => Some(Self::Deny),
            3 => Some(Self::Kill),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Audit => "audit",
            Self::Deny => "deny",
            Self::Kill => "kill",
        }
    }
}

/// A BPF LSM hook that one of our programs is attached to.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Capable = 0,
    SbMount = 1,
    SbUmount = 2,
    SbPivotroot = 3,
    MoveMount = 4,
    KeyAlloc = 5,
    KeyPermission = 6,
    /// Syscall layer (#6): raw tracepoint at system call entry.
    SysEnter = 7,
    /// Syscall layer (#6): raw tracepoint at system call exit.
    SysExit = 8,
    /// Removing a directory entry that is a mount point in another mount namespace detaches
    /// that mount with no mount hook: rmdir, unlink and rename are judged as `mount` there.
    /// The same hooks refuse a covered process the enforcer's own pins (tamper protection).
    InodeRmdir = 9,
    InodeUnlink = 10,
    InodeRename = 11,
    /// Tamper protection: no covered process may trace or write the memory of a runtime's setup
    /// process, nor get or change the enforcer's BPF objects.
    PtraceAccessCheck = 12,
    PtraceTraceme = 13,
    Bpf = 14,
    BpfMap = 15,
    BpfProg = 16,
    // Workload arming (raw tracepoints; they decide nothing and never appear in events). Numbered
    // apart from the LSM hooks so both lists can grow.
    ArmFork = 20,
    ArmAttach = 21,
    ArmExec = 22,
    ArmFree = 23,
    ArmMove = 24,
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A BPF LSM hook, named without the `bpf_lsm_` prefix.
    Lsm(&'static str),
    /// A raw tracepoint (`BPF_PROG_TYPE_RAW_TRACEPOINT`), such as `sched_process_fork`.
    RawTracepoint(&'static str),
    /// An fentry program on a kernel function (BPF trampoline), such as `cgroup_attach_task`.
    Fentry(&'static str),
}

impl Attach {
    /// The hook or tracepoint name.
    pub const fn point(self) -> &'static str {
        match self {
            Self::Lsm(name) | Self::RawTracepoint(name) | Self::Fentry(name) => name,
        }
    }
}

/// One row of the hook table: which program serves which kernel hook.
pub struct HookSpec {
    pub hook: Hook,
    /// Name of the program in the BPF object (at most 15 bytes: the kernel cuts longer names).
    pub program: &'static str,
    pub attach: Attach,
}

/// One row of the operation table: the operation, its CLI name and the hooks that guard it.
pub struct OpSpec {
    pub op: Operation,
    pub name: &'static str,
    pub summary: &'static str,
    pub hooks: &'static [Hook],
}

/// A BPF LSM program named after its hook.
const fn lsm(hook: Hook, name: &'static str) -> HookSpec {
    HookSpec {
        hook,
        program: name,
        attach: Attach::Lsm(name),
    }
}

/// A raw tracepoint program.
const fn raw_tp(hook: Hook, program: &'static str, tracepoint: &'static str) -> HookSpec {
    HookSpec {
        hook,
        program,
        attach: Attach::RawTracepoint(tracepoint),
    }
}

/// Every hook we attach. User space loads and attaches exactly these programs.
pub const HOOKS: &[HookSpec] = &[
    lsm(Hook::Capable, "capable"),
    lsm(Hook::SbMount, "sb_mount"),
    lsm(Hook::SbUmount, "sb_umount"),
    lsm(Hook::SbPivotroot, "sb_pivotroot"),
    lsm(Hook::MoveMount, "move_mount"),
    lsm(Hook::KeyAlloc, "key_alloc"),
    lsm(Hook::KeyPermission, "key_permission"),
    lsm(Hook::InodeRmdir, "inode_rmdir"),
    lsm(Hook::InodeUnlink, "inode_unlink"),
    lsm(Hook::InodeRename, "inode_rename"),
    HookSpec {
        hook: Hook::PtraceAccessCheck,
        program: "ptrace_access",
        attach: Attach::Lsm("ptrace_access_check"),
    },
    lsm(Hook::PtraceTraceme, "ptrace_traceme"),
    lsm(Hook::Bpf, "bpf"),
    lsm(Hook::BpfMap, "bpf_map"),
    lsm(Hook::BpfProg, "bpf_prog"),
    raw_tp(Hook::ArmFork, "arm_fork", "sched_process_fork"),
    raw_tp(Hook::ArmAttach, "arm_attach", "cgroup_attach_task"),
    raw_tp(Hook::ArmExec, "arm_exec", "sched_process_exec"),
    raw_tp(Hook::ArmFree, "arm_free", "sched_process_free"),
    HookSpec {
        hook: Hook::ArmMove,
        program: "arm_move",
        attach: Attach::Fentry("cgroup_attach_task"),
    },
];

/// The syscall layer's programs (#6). Not in [`HOOKS`]: user space attaches them only while some
/// policy has [`policy_flags::SYSCALL_LAYER`], and unpins their links when the last such policy
/// goes, so without one no system call pays for them.
pub const SYSCALL_HOOKS: &[HookSpec] = &[
    HookSpec {
        hook: Hook::SysEnter,
        program: "sys_enter",
        attach: Attach::RawTracepoint("sys_enter"),
    },
    HookSpec {
        hook: Hook::SysExit,
        program: "sys_exit",
        attach: Attach::RawTracepoint("sys_exit"),
    },
];

/// Every operation a policy can name. Adding an operation is one row here plus one hook module in
/// `enforcer-ebpf`.
pub const OPERATIONS: &[OpSpec] = &[
    OpSpec {
        op: Operation::Mount,
        name: "mount",
        summary: "mount, unmount, remount, bind, move, pivot_root, the new mount API",
        hooks: &[
            Hook::SbMount,
            Hook::SbUmount,
            Hook::SbPivotroot,
            Hook::MoveMount,
            Hook::Capable,
            Hook::InodeRmdir,
            Hook::InodeUnlink,
            Hook::InodeRename,
        ],
    },
    OpSpec {
        op: Operation::Keyctl,
        name: "keyctl",
        summary: "create, find, read, change or link kernel keys and keyrings",
        hooks: &[Hook::KeyAlloc, Hook::KeyPermission],
    },
    OpSpec {
        op: Operation::Settime,
        name: "settime",
        summary: "set or adjust the system clock",
        hooks: &[Hook::Capable],
    },
];

/// Capabilities whose checks the `capable` program guards.
pub mod caps {
    pub const CAP_SYS_ADMIN: i32 = 21;
    pub const CAP_SYS_TIME: i32 = 25;
}

pub mod syscalls;

impl Operation {
    pub fn spec(self) -> Option<&'static OpSpec> {
        OPERATIONS.iter().find(|spec| spec.op == self)
    }

    pub fn from_u8(raw: u8) -> Option<Self> {
        OPERATIONS
            .iter()
            .map(|spec| spec.op)
            .find(|op| *op as u8 == raw)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        OPERATIONS
            .iter()
            .find(|spec| spec.name == name)
            .map(|spec| spec.op)
    }

    pub fn name(self) -> &'static str {
        self.spec().map_or("unknown", |spec| spec.name)
    }
}

impl Hook {
    pub fn spec(self) -> Option<&'static HookSpec> {
        HOOKS
            .iter()
            .chain(SYSCALL_HOOKS)
            .find(|spec| spec.hook == self)
    }

    pub fn from_u8(raw: u8) -> Option<Self> {
        HOOKS
            .iter()
            .chain(SYSCALL_HOOKS)
            .map(|spec| spec.hook)
            .find(|hook| *hook as u8 == raw)
    }

    pub fn name(self) -> &'static str {
        self.spec().map_or("unknown", |spec| spec.attach.point())
    }
}

/// Value of the policy map, keyed by cgroup v2 id (the inode number of the cgroup directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// An [`Action`] per [`Operation`], indexed by the operation's discriminant.
    pub actions: [u8; OP_SLOTS],
    /// Depth of the cgroup below the cgroup v2 root (the root is 0). User space derives
    /// [`PolicyIndex`] from it.
    pub level: u32,
    /// [`policy_flags`] bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<Policy>() == 24);

impl Policy {
    pub fn action(&self, op: Operation) -> Action {
        Action::from_u8(self.actions[op as usize]).unwrap_or(Action::Deny)
    }
}

/// Bits of [`Policy::flags`].
pub mod policy_flags {
    /// The policy wants the syscall layer (raw `sys_enter`/`sys_exit` programs) as well.
    pub const SYSCALL_LAYER: u32 = 1 << 0;
    /// Workload arming: a task that entered the cgroup is subject from its first exec there; the
    /// container runtime's setup before that exec is not.
    pub const ARM_EXEC: u32 = 1 << 1;
    /// Syscall layer only (#6, `attach --layer syscall`): the LSM programs leave this policy's
    /// cgroups alone, so it behaves the same on hosts with and without BPF LSM. Set only together
    /// with [`SYSCALL_LAYER`].
    pub const SYSCALL_ONLY: u32 = 1 << 2;
}

/// Key of the `SETUP` map (workload arming): a process by its thread group id and its group
/// leader's `start_time` (monotonic ns), so a reused pid never matches an old entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub tgid: u32,
    pub _pad: u32,
    pub start_time: u64,
}
const _: () = assert!(core::mem::size_of::<ProcessKey>() == 16);

/// Value of the `SETUP` map (workload arming): what a setup process was when it became setup.
/// An exec keeps a process setup only while its root directory and mount namespace are still
/// these (the runtimes re-execute themselves on the host side, before they enter the
/// container's root; the entrypoint's exec comes after), and only for an exec of `exe` or of a
/// memfd. Kernel object addresses, compared, never dereferenced by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetupState {
    /// `struct inode *` of the executable the process ran.
    pub exe: u64,
    /// `fs->root`: `struct vfsmount *` and `struct dentry *`.
    pub root_mnt: u64,
    pub root_dentry: u64,
    /// `nsproxy->mnt_ns`.
    pub mnt_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SetupState>() == 32);

/// Keys of the `PROTECTED` map: the kernel objects a covered process may never get a file
/// descriptor for, change or unpin (tamper protection), by kind and kernel id. User space fills
/// it from its pins after every load; the programs only read it.
pub mod protect {
    pub const MAP: u32 = 1;
    pub const PROG: u32 = 2;
    pub const LINK: u32 = 3;
    /// The bpffs superblock holding the pins, by its kernel `dev_t` (`MKDEV(major, minor)`).
    pub const BPFFS_DEV: u32 = 4;

    pub const fn key(kind: u32, id: u32) -> u64 {
        ((kind as u64) << 32) | id as u64
    }
}

/// Byte offsets of the kernel struct fields the programs read, found by user space in the running
/// kernel's BTF (`/sys/kernel/btf/vmlinux`) and written into the programs' read-only data before
/// they load. Rust BPF programs get no CO-RE relocations from aya 0.14, so this is how they read
/// fields whose offsets differ between kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `task_struct.pid` (`pid_t`: the thread id).
    pub task_pid: u32,
    /// `task_struct.tgid` (`pid_t`).
    pub task_tgid: u32,
    /// `task_struct.start_time` (`u64`, monotonic ns).
    pub task_start_time: u32,
    /// `task_struct.real_parent` (`struct task_struct *`).
    pub task_real_parent: u32,
    /// `task_struct.cred` (`const struct cred *`).
    pub task_cred: u32,
    /// `task_struct.comm` (`char[16]`).
    pub task_comm: u32,
    /// `task_struct.seccomp.mode` (`int`).
    pub task_seccomp_mode: u32,
    /// `cred.uid` (`kuid_t`, a `u32`).
    pub cred_uid: u32,
    /// `cred.gid` (`kgid_t`, a `u32`).
    pub cred_gid: u32,
    /// `cred.cap_effective` (`kernel_cap_t`: 8 bytes, capability n is bit n, on every kernel).
    pub cred_cap_effective: u32,
    /// `task_struct.group_leader` (`struct task_struct *`).
    pub task_group_leader: u32,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (`struct cgroup *`: the task's cgroup v2 cgroup).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (`struct kernfs_node *`: the cgroup's directory).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (`u64`: the cgroup id, the directory's inode number).
    pub kernfs_node_id: u32,
    /// `kernfs_node.parent` (`struct kernfs_node *`: the parent cgroup's directory).
    pub kernfs_node_parent: u32,
    /// `linux_binprm.file` (`struct file *`: the executable being run).
    pub binprm_file: u32,
    /// `file.f_path.dentry` (`struct dentry *`).
    pub file_dentry: u32,
    /// `dentry.d_name.name` (`const unsigned char *`).
    pub dentry_name: u32,
    /// `task_struct.mm` (`struct mm_struct *`).
    pub task_mm: u32,
    /// `mm_struct.exe_file` (`struct file *`: the executable the process runs).
    pub mm_exe_file: u32,
    /// `file.f_inode` (`struct inode *`).
    pub file_inode: u32,
    /// `task_struct.thread_info.status` (`u32`; bit [`TS_COMPAT`] during a 32-bit system call).
    pub task_ti_status: u32,
    /// `task_struct.fs` (`struct fs_struct *`).
    pub task_fs: u32,
    /// `fs_struct.root.mnt` (`struct vfsmount *`) and `fs_struct.root.dentry`.
    pub fs_root_mnt: u32,
    pub fs_root_dentry: u32,
    /// `task_struct.nsproxy` (`struct nsproxy *`) and `nsproxy.mnt_ns`.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    /// `file.f_path.mnt` (`struct vfsmount *`), embedded at `mount.mnt` in `struct mount`,
    /// whose `mnt_ns` is `MNT_NS_INTERNAL` for the kernel's internal mounts (memfd's shmem).
    pub file_mnt: u32,
    pub mount_mnt: u32,
    pub mount_mnt_ns: u32,
    /// `inode.i_sb`, `super_block.s_magic` (`unsigned long`), `super_block.s_dev` (`dev_t`).
    pub inode_sb: u32,
    pub sb_magic: u32,
    pub sb_dev: u32,
    /// `dentry.d_flags` (`unsigned int`) and `dentry.d_sb`.
    pub dentry_flags: u32,
    pub dentry_sb: u32,
    /// `cgroup.level` (`int`) and `cgroup.ancestors` (`struct cgroup *[]`, root first).
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    /// `bpf_map.id`, `bpf_prog.aux`, `bpf_prog_aux.id`, `bpf_link.id` (`u32` ids).
    pub bpf_map_id: u32,
    pub bpf_prog_aux: u32,
    pub bpf_prog_aux_id: u32,
    pub bpf_link_id: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`,
    /// `file.private_data`: from a descriptor number to the object behind it.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    /// The value of `DCACHE_MOUNTED` (bit 16 up to 6.14, an enum of bit 15 since).
    pub dcache_mounted: u32,
    /// How many arguments the `bpf` LSM hook has (3 up to 6.15, 4 since): the previous LSM's
    /// verdict comes after them.
    pub lsm_bpf_args: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<KernelLayout>() == 200);

/// x86 `thread_info.status` bit set from the entry of a 32-bit (ia32) system call until the
/// return to user space, whatever instruction made it (`int $0x80` from a 64-bit process too).
pub const TS_COMPAT: u32 = 0x0002;

/// A marker for an unused [`LevelFilter`] slot.
pub const LEVEL_UNUSED: u32 = u32::MAX;
/// Bits of each [`LevelFilter`]'s membership filter.
pub const FILTER_BITS: u32 = 512;

/// The policy cgroups at one cgroup depth, as a one-hash membership filter over their ids. A
/// caller's ancestor at that depth whose bit is clear holds no policy: the common case (a caller
/// outside every policy) never reaches the policy hash map. A set bit may be a collision; the hash
/// map decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelFilter {
    /// Depth below the cgroup v2 root, or [`LEVEL_UNUSED`].
    pub level: u32,
    pub _pad: u32,
    pub bits: [u64; (FILTER_BITS / 64) as usize],
}
const _: () = assert!(core::mem::size_of::<LevelFilter>() == 72);

impl Default for LevelFilter {
    fn default() -> Self {
        Self {
            level: LEVEL_UNUSED,
            _pad: 0,
            bits: [0; (FILTER_BITS / 64) as usize],
        }
    }
}

impl LevelFilter {
    /// Fibonacci hashing: cgroup ids are small sequential inode numbers, which this spreads.
    #[inline(always)]
    pub const fn bit(id: u64) -> u32 {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 9)) as u32
    }

    #[inline(always)]
    pub fn may_hold(&self, id: u64) -> bool {
        let bit = Self::bit(id);
        match self.bits.get((bit >> 6) as usize) {
            Some(word) => word & (1 << (bit & 63)) != 0,
            None => true,
        }
    }

    pub fn insert(&mut self, id: u64) {
        let bit = Self::bit(id);
        self.bits[(bit >> 6) as usize] |= 1 << (bit & 63);
    }
}

/// Single entry of an array map: the depths that hold policies, one slot each.
///
/// User space rewrites this value while programs read it, and an array update is a plain copy, so
/// a program may see a mix of old and new bytes. The update rules keep every such mix safe: a slot
/// never changes depth while in use (freed slots become [`LEVEL_UNUSED`] and are reused only in a
/// later update), `count` only grows and grows in a write of its own after the new slots are
/// filled, and a filter gains bits only for policies already in the hash map and loses them only
/// after they are gone. The programs check every slot below `count` and pick the deepest hit, so
/// slot order does not matter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyIndex {
    pub count: u32,
    pub _pad: u32,
    pub slots: [LevelFilter; MAX_POLICY_LEVELS],
}
const _: () = assert!(core::mem::size_of::<PolicyIndex>() == 512);

/// Run-time switches, single entry of an array map. Read only on the report path (after a policy
/// asked for something), never by callers outside every policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`config`] bits.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 8);

/// Bits of [`Config::flags`].
pub mod config {
    /// Kernel-side debug log lines (aya-log) for every reported decision.
    pub const DEBUG_LOG: u32 = 1 << 0;
    /// Benches only: no event at all, to measure what an event costs.
    pub const BENCH_NO_EVENTS: u32 = 1 << 1;
    /// Benches only: wake the consumer on every event, to measure what the no-wakeup rule saves.
    pub const BENCH_WAKEUP_EACH: u32 = 1 << 2;
    /// Benches only: the event budget never runs out (its bookkeeping still runs), so a loop of
    /// events measures the event path.
    pub const BENCH_UNLIMITED_BUDGET: u32 = 1 << 3;
}

/// Per-CPU decision counters of a policy cgroup: `by_action[action][operation]`. The `allow` row
/// stays zero; it is there so the BPF side indexes by the action's own value, a bound the
/// verifier of every kernel can follow. Counted before and independently of event emission, so
/// they stay exact when events are dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub by_action: [[u64; OP_SLOTS]; 4],
}
const _: () = assert!(core::mem::size_of::<Counters>() == 4 * 8 * OP_SLOTS);

impl Counters {
    pub fn get(&self, action: Action, op: Operation) -> u64 {
        self.by_action[action as usize][op as usize]
    }

    /// Refused tamper attempts of the policy's processes.
    pub fn tamper(&self) -> u64 {
        self.by_action[Action::Deny as usize][TAMPER_SLOT]
    }

    /// Events the policy's event budget suppressed (their decisions are counted as usual).
    pub fn suppressed(&self) -> u64 {
        self.by_action[Action::Allow as usize][SUPPRESSED_SLOT]
    }

    /// Adds another CPU's counts.
    pub fn add(&mut self, other: &Counters) {
        for (row, other_row) in self.by_action.iter_mut().zip(&other.by_action) {
            for (count, other_count) in row.iter_mut().zip(other_row) {
                *count += other_count;
            }
        }
    }
}

/// Version of [`Event`]; the first field of every record.
pub const EVENT_VERSION: u16 = 3;
/// Version 2 records have the same size and layout, with [`Event::kind`] always 0.
pub const EVENT_V2: u16 = 2;

/// Values of [`Event::kind`].
pub mod kind {
    /// An audited, denied or killed operation.
    pub const VIOLATION: u8 = 0;
    /// A covered process reached for the enforcer itself or for a runtime's setup process:
    /// refused whatever its policy says. [`crate::Event::hook`] says which hook,
    /// `hook_arg` the object (bpf command and object id, traced pid).
    pub const TAMPER: u8 = 1;
    /// The events a policy's budget suppressed: `hook_arg` is how many, `requested_sec` the
    /// monotonic second the suppression began; sent when the budget lets events through again.
    pub const SUMMARY: u8 = 2;

    pub const fn name(kind: u8) -> &'static str {
        match kind {
            TAMPER => "tamper",
            SUMMARY => "summary",
            _ => "violation",
        }
    }
}
/// Size of a version 1 record (no syscall-layer block); user space still reads those, which an
/// upgrade in place can leave in the ring buffer.
pub const EVENT_V1_SIZE: usize = 432;
pub const COMM_LEN: usize = 16;
/// Bytes of each string argument an event carries (NUL-terminated, cut when longer).
pub const EVENT_STR_LEN: usize = 96;
/// Slots of [`Event::strings`]; [`syscalls::string_args`] says which argument fills which.
pub mod string_slot {
    /// mount source, move_mount/pivot_root origin, key type.
    pub const SOURCE: usize = 0;
    /// mount target, umount2/open_tree/fspick/mount_setattr path, pivot_root new root, key
    /// description.
    pub const TARGET: usize = 1;
    /// mount and fsopen file system type, fsconfig parameter name.
    pub const FS_TYPE: usize = 2;
}

/// A violation record on the ring buffer: one per audited, denied or killed operation.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub version: u16,
    /// [`Operation`] discriminant.
    pub op: u8,
    /// [`Hook`] discriminant.
    pub hook: u8,
    /// [`Action`] discriminant.
    pub action: u8,
    // Padding in naturally aligned integers: an odd-sized byte array is zeroed through a memset
    // call in BPF code, a byte loop on the event's hot path.
    /// [`kind`]: a violation, a tamper attempt or a budget summary (version 3; 0 before).
    pub kind: u8,
    pub _pad0w: u16,
    /// Errno the hook returned to the caller (0 when permitted).
    pub errno: i32,
    /// Process id (thread group id) of the caller.
    pub pid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad1: u32,
    /// `CLOCK_MONOTONIC` time of the decision, in nanoseconds.
    pub ktime_ns: u64,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// cgroup v2 id whose policy decided (the caller's or its nearest ancestor with a policy).
    pub policy_cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// System call the caller was in (x86_64 number from its saved registers), -1 if none.
    pub syscall: i64,
    /// Its six raw arguments.
    pub args: [u64; 6],
    /// Hook-specific number: the capability for `capable`, the requested permission
    /// (`enum key_need_perm`) for `key_permission`, the allocation flags for `key_alloc`, the
    /// flags for `sb_mount` and `sb_umount`, else 0.
    pub hook_arg: i64,
    /// The requested time in seconds for settimeofday/clock_settime, else -1.
    pub requested_sec: i64,
    /// The call's string arguments, by [`string_slot`] (see [`syscalls::string_args`]); empty
    /// when the call has none there or it could not be read. As the caller wrote them: a
    /// relative path stays relative.
    pub strings: [[u8; EVENT_STR_LEN]; 3],
    // Syscall layer (#6), new in version 2.
    /// Which program reported: [`source`].
    pub source: u8,
    /// Who refused the call, by [`refused_by`]: set when the enforcer's LSM program denied it,
    /// or when a syscall-layer event saw EPERM/EACCES come back.
    pub refused_by: u8,
    /// 1 when the caller made a 32-bit (ia32) system call; [`Event::syscall`] is then the
    /// x86_64 number of the same call, `args` are in the call's order, and the requested time is
    /// not read (32-bit time layouts).
    pub compat: u8,
    pub _pad2: u8,
    pub _pad2w: u32,
    /// The system call's return value (`sys_exit`); for LSM events the hook's return value.
    pub ret: i64,
}
const _: () = assert!(core::mem::size_of::<Event>() == 448);

/// Values of [`Event::source`].
pub mod source {
    /// A BPF LSM hook decided (the call had not finished).
    pub const LSM: u8 = 0;
    /// The syscall layer reported at `sys_exit`, with the call's return value.
    pub const SYSCALL: u8 = 1;
}

/// Values of [`Event::refused_by`]: which layer made a call fail with EPERM/EACCES.
pub mod refused_by {
    /// Not refused (or refused with another errno).
    pub const NONE: u8 = 0;
    /// This enforcer's LSM program (its own verdict).
    pub const ENFORCER: u8 = 1;
    /// The task's seccomp filter (the call never reached `sys_enter`).
    pub const SECCOMP: u8 = 2;
    /// The task lacks the capability the call needs (`CAP_SYS_ADMIN` for the mount family,
    /// `CAP_SYS_TIME` for clock changes) in its effective set.
    pub const CAPABILITY: u8 = 3;
    /// Something else: another LSM (AppArmor, SELinux, Landlock...) or the kernel's own checks.
    pub const OTHER: u8 = 4;

    pub const fn name(value: u8) -> Option<&'static str> {
        match value {
            ENFORCER => Some("enforcer"),
            SECCOMP => Some("seccomp"),
            CAPABILITY => Some("capability"),
            OTHER => Some("other"),
            _ => None,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with every byte
    // covered by a field (padding is explicit), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::PolicyIndex {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::ProcessKey {}
    unsafe impl aya::Pod for super::SetupState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_unique_name_and_known_hooks() {
        for (i, spec) in OPERATIONS.iter().enumerate() {
            assert!((spec.op as usize) < OP_SLOTS);
            assert_eq!(Operation::from_name(spec.name), Some(spec.op));
            assert!(OPERATIONS[i + 1..].iter().all(|o| o.name != spec.name));
            for hook in spec.hooks {
                assert!(hook.spec().is_some(), "{} names an unknown hook", spec.name);
            }
        }
    }

    #[test]
    fn program_names_fit_the_kernel_limit() {
        for spec in HOOKS {
            assert!(spec.program.len() <= 15, "{} is too long", spec.program);
        }
    }

    #[test]
    fn every_guarded_call_has_a_name_and_an_operation() {
        for nr in syscalls::GUARDED {
            assert!(syscalls::name(nr).is_some(), "{nr}");
            assert!(syscalls::operation(nr).is_some(), "{nr}");
        }
        for nr in [0, 39, 1, -1, 443] {
            assert_eq!(syscalls::operation(nr), None, "{nr}");
        }
        assert!(SYSCALL_HOOKS.iter().all(|spec| spec.program.len() <= 15));
        assert_eq!(Hook::SysExit.name(), "sys_exit");
    }

    #[test]
    fn unknown_action_bytes_fail_closed() {
        let policy = Policy {
            actions: [9; OP_SLOTS],
            ..Policy::default()
        };
        assert_eq!(policy.action(Operation::Settime), Action::Deny);
    }

    #[test]
    fn every_operation_is_in_the_table() {
        for op in [Operation::Mount, Operation::Keyctl, Operation::Settime] {
            assert!(op.spec().is_some(), "{op:?}");
        }
    }
}
