//! The operations a policy can name, the hooks that guard them and the actions a policy can take:
//! the registry user space attaches from and the programs report by. The operations themselves
//! are rows of `operations!` (see `table.rs` for what each row generates).
use crate::table::operations;

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
    /// Syscall layer: raw tracepoint at system call entry.
    SysEnter = 7,
    /// Syscall layer: raw tracepoint at system call exit.
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
    /// The capability its calls check first ([`Operation::capability`]).
    pub capability: Option<i32>,
    /// Its guarded system calls (x86_64 numbers; [`crate::syscalls::CALLS`] has their rows).
    pub calls: &'static [i64],
    /// The call `enforcer check` attempts to see the operation refused.
    pub self_test: i64,
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

/// The syscall layer's programs. Not in [`HOOKS`]: user space attaches them only while some
/// policy has [`crate::policy_flags::SYSCALL_LAYER`], and unpins their links when the last such policy
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

operations! {
    family Mount = 0 {
        name: "mount",
        summary: "mount, unmount, remount, bind, move, pivot_root, the new mount API",
        hooks: [
            SbMount,
            SbUmount,
            SbPivotroot,
            MoveMount,
            Capable,
            InodeRmdir,
            InodeUnlink,
            InodeRename,
        ],
        capability: Some(caps::CAP_SYS_ADMIN),
        self_test: MOUNT,
        calls: {
            MOUNT = 165, "mount", judged at hook, ia32 numbers [MOUNT = 21];
            UMOUNT2 = 166, "umount2", judged at hook, ia32 numbers [
                /// `umount(name)`: umount2 without flags.
                UMOUNT = 22,
                UMOUNT2 = 52,
            ];
            PIVOT_ROOT = 155, "pivot_root", judged at hook, ia32 numbers [PIVOT_ROOT = 217];
            OPEN_TREE = 428, "open_tree", judged at capability, ia32 same [];
            MOVE_MOUNT = 429, "move_mount", judged at hook, ia32 same [];
            FSOPEN = 430, "fsopen", judged at capability, ia32 same [];
            FSCONFIG = 431, "fsconfig", judged at capability, ia32 same [];
            FSMOUNT = 432, "fsmount", judged at capability, ia32 same [];
            FSPICK = 433, "fspick", judged at capability, ia32 same [];
            MOUNT_SETATTR = 442, "mount_setattr", judged at capability, ia32 same [];
            /// `open_tree_attr` (kernel 6.15): `open_tree` with mount attributes; no dedicated
            /// hook.
            OPEN_TREE_ATTR = 467, "open_tree_attr", judged at capability, ia32 same [];
        }
        strings: {
            MOUNT => [0, 1, 2],
            UMOUNT2 => [NO_ARG, 0, NO_ARG],
            PIVOT_ROOT => [1, 0, NO_ARG],
            MOVE_MOUNT => [1, 3, NO_ARG],
            OPEN_TREE | FSPICK | MOUNT_SETATTR | OPEN_TREE_ATTR => [NO_ARG, 1, NO_ARG],
            FSOPEN => [NO_ARG, NO_ARG, 0],
            FSCONFIG => [NO_ARG, NO_ARG, 2],
        }
    }
    family Keyctl = 1 {
        name: "keyctl",
        summary: "create, find, read, change or link kernel keys and keyrings",
        hooks: [KeyAlloc, KeyPermission],
        capability: None,
        self_test: ADD_KEY,
        calls: {
            ADD_KEY = 248, "add_key", judged at hook, ia32 numbers [ADD_KEY = 286];
            REQUEST_KEY = 249, "request_key", judged at hook, ia32 numbers [REQUEST_KEY = 287];
            KEYCTL = 250, "keyctl", judged at hook, ia32 numbers [KEYCTL = 288];
        }
        strings: {
            ADD_KEY | REQUEST_KEY => [0, 1, NO_ARG],
        }
    }
    family Settime = 2 {
        name: "settime",
        summary: "set or adjust the system clock",
        hooks: [Capable],
        capability: Some(caps::CAP_SYS_TIME),
        self_test: SETTIMEOFDAY,
        calls: {
            SETTIMEOFDAY = 164, "settimeofday", judged at capability, ia32 numbers [
                /// `stime(time_t *)`: sets the clock.
                STIME = 25,
                SETTIMEOFDAY = 79,
            ];
            CLOCK_SETTIME = 227, "clock_settime", judged at capability,
                ia32 numbers [CLOCK_SETTIME = 264, CLOCK_SETTIME64 = 404];
            ADJTIMEX = 159, "adjtimex", judged at capability, ia32 numbers [ADJTIMEX = 124];
            CLOCK_ADJTIME = 305, "clock_adjtime", judged at capability,
                ia32 numbers [CLOCK_ADJTIME = 343, CLOCK_ADJTIME64 = 405];
        }
        strings: {}
    }
    family Reboot = 3 {
        name: "reboot",
        summary: "reboot, halt or power off the machine (in a child PID namespace: kill its init)",
        hooks: [Capable],
        capability: Some(caps::CAP_SYS_BOOT),
        self_test: REBOOT,
        calls: {
            /// Checks CAP_SYS_BOOT in the caller's PID namespace's user namespace before it
            /// looks at its magic numbers; in a child PID namespace it kills that namespace's
            /// init instead of rebooting.
            REBOOT = 169, "reboot", judged at capability, ia32 numbers [REBOOT = 88];
        }
        strings: {}
    }
    family Kexec = 4 {
        name: "kexec",
        summary: "load a new kernel to boot into (kexec_load, kexec_file_load)",
        hooks: [Capable],
        capability: Some(caps::CAP_SYS_BOOT),
        self_test: KEXEC_LOAD,
        calls: {
            /// Checks CAP_SYS_BOOT before its flags, as kexec_file_load does. An x32 caller
            /// numbers it 528 ([`crate::syscalls::x32::native`]).
            KEXEC_LOAD = 246, "kexec_load", judged at capability, ia32 numbers [KEXEC_LOAD = 283];
            KEXEC_FILE_LOAD = 320, "kexec_file_load", judged at capability, ia32 none [];
        }
        strings: {}
    }
    // Not guarded by number: named for the events of the hooks that see them (a mount point
    // removed, a pin unlinked).
    seen: {
        calls: {
            RENAME = 82, "rename";
            RMDIR = 84, "rmdir";
            UNLINK = 87, "unlink";
            UNLINKAT = 263, "unlinkat";
            RENAMEAT = 264, "renameat";
            RENAMEAT2 = 316, "renameat2";
        }
        strings: {
            RMDIR | UNLINK => [NO_ARG, 0, NO_ARG],
            UNLINKAT => [NO_ARG, 1, NO_ARG],
            RENAME => [0, 1, NO_ARG],
            RENAMEAT | RENAMEAT2 => [1, 3, NO_ARG],
        }
    }
}

/// The kernel cuts program names at 15 bytes: a longer one fails every build, the BPF object's
/// included.
const _: () = {
    let mut i = 0;
    while i < HOOKS.len() {
        assert!(HOOKS[i].program.len() <= 15);
        i += 1;
    }
    let mut i = 0;
    while i < SYSCALL_HOOKS.len() {
        assert!(SYSCALL_HOOKS[i].program.len() <= 15);
        i += 1;
    }
};

/// Capabilities whose checks the `capable` program guards.
pub mod caps {
    pub const CAP_SYS_ADMIN: i32 = 21;
    pub const CAP_SYS_BOOT: i32 = 22;
    pub const CAP_SYS_TIME: i32 = 25;
}

impl Operation {
    pub fn spec(self) -> Option<&'static OpSpec> {
        OPERATIONS.iter().find(|spec| spec.op == self)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OP_SLOTS, syscalls};

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
    fn every_operation_is_in_the_table() {
        for op in [
            Operation::Mount,
            Operation::Keyctl,
            Operation::Settime,
            Operation::Reboot,
            Operation::Kexec,
        ] {
            assert!(op.spec().is_some(), "{op:?}");
            assert_eq!(Operation::from_u8(op as u8), Some(op));
        }
        assert_eq!(Operation::from_u8(OPERATIONS.len() as u8), None);
    }

    #[test]
    fn every_operation_lists_its_own_calls() {
        for spec in OPERATIONS {
            let calls = syscalls::CALLS
                .iter()
                .filter(|call| call.op == spec.op)
                .map(|call| call.nr);
            assert!(calls.eq(spec.calls.iter().copied()), "{}", spec.name);
            assert!(spec.calls.contains(&spec.self_test), "{}", spec.name);
            assert_eq!(spec.capability, spec.op.capability());
            // A call judged at its capability check needs the capability and the `capable`
            // program.
            if syscalls::CALLS
                .iter()
                .any(|call| call.op == spec.op && call.at_capability)
            {
                assert!(spec.capability.is_some(), "{}", spec.name);
                assert!(spec.hooks.contains(&Hook::Capable), "{}", spec.name);
            }
        }
    }
}
