//! The event record on the ring buffer and the byte values of its fields: what the programs write
//! for every reported decision and user space decodes.

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
/// Slots of [`Event::strings`]; [`syscalls::string_args`](crate::syscalls::string_args) says which argument fills which.
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
    /// [`Operation`](crate::Operation) discriminant.
    pub op: u8,
    /// [`Hook`](crate::Hook) discriminant.
    pub hook: u8,
    /// [`Action`](crate::Action) discriminant.
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
    /// The call's string arguments, by [`string_slot`] (see [`syscalls::string_args`](crate::syscalls::string_args)); empty
    /// when the call has none there or it could not be read. As the caller wrote them: a
    /// relative path stays relative.
    pub strings: [[u8; EVENT_STR_LEN]; 3],
    // The syscall layer's block, new in version 2.
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
const _: () = assert!(size_of::<Event>() == 448);

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
    /// `CAP_SYS_TIME` for clock changes, `CAP_SYS_BOOT` for reboot and kexec) in its effective
    /// set.
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
