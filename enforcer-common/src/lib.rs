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

/// Most distinct cgroup depths that may hold a policy at once. The BPF programs look up one
/// ancestor per depth in this list, so the cost for any caller is bounded by it, not by its own
/// depth.
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
    Settime = 0,
}

/// One row of the hook table: which program serves which kernel hook.
pub struct HookSpec {
    pub hook: Hook,
    /// Name of the program in the BPF object (at most 15 bytes: the kernel cuts longer names).
    pub program: &'static str,
    /// LSM hook name, without the `bpf_lsm_` prefix.
    pub lsm_hook: &'static str,
}

/// One row of the operation table: the operation, its CLI name and the hooks that guard it.
pub struct OpSpec {
    pub op: Operation,
    pub name: &'static str,
    pub summary: &'static str,
    pub hooks: &'static [Hook],
}

/// Every hook we attach. User space loads and attaches exactly these programs.
pub const HOOKS: &[HookSpec] = &[HookSpec {
    hook: Hook::Settime,
    program: "settime",
    lsm_hook: "settime",
}];

/// Every operation a policy can name. Adding an operation is one row here plus one hook module in
/// `enforcer-ebpf`.
pub const OPERATIONS: &[OpSpec] = &[OpSpec {
    op: Operation::Settime,
    name: "settime",
    summary: "set the system clock (settimeofday, clock_settime(CLOCK_REALTIME))",
    hooks: &[Hook::Settime],
}];

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
        HOOKS.iter().find(|spec| spec.hook == self)
    }

    pub fn from_u8(raw: u8) -> Option<Self> {
        HOOKS
            .iter()
            .map(|spec| spec.hook)
            .find(|hook| *hook as u8 == raw)
    }

    pub fn name(self) -> &'static str {
        self.spec().map_or("unknown", |spec| spec.lsm_hook)
    }
}

/// Value of the policy map, keyed by cgroup v2 id (the inode number of the cgroup directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// An [`Action`] per [`Operation`], indexed by the operation's discriminant.
    pub actions: [u8; OP_SLOTS],
    /// Depth of the cgroup below the cgroup v2 root (the root is 0). User space derives
    /// [`PolicyLevels`] from it.
    pub level: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Policy>() == 24);

impl Policy {
    pub fn action(&self, op: Operation) -> Action {
        Action::from_u8(self.actions[op as usize]).unwrap_or(Action::Deny)
    }
}

/// The cgroup depths that hold at least one policy, deepest first (so the first hit is the nearest
/// ancestor). Single entry of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyLevels {
    pub count: u32,
    pub levels: [u32; MAX_POLICY_LEVELS],
}
const _: () = assert!(core::mem::size_of::<PolicyLevels>() == 32);

/// Per-CPU counters of a policy cgroup, indexed by operation. Counted before and independently of
/// event emission, so they stay exact when events are dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub audited: [u64; OP_SLOTS],
    pub denied: [u64; OP_SLOTS],
    pub killed: [u64; OP_SLOTS],
}
const _: () = assert!(core::mem::size_of::<Counters>() == 3 * 8 * OP_SLOTS);

/// Version of [`Event`]; the first field of every record.
pub const EVENT_VERSION: u16 = 1;
pub const COMM_LEN: usize = 16;
pub const DETAIL_TEXT_LEN: usize = 128;

/// Which field layout [`Event::args`] follows, by hook.
pub mod args {
    /// `settime`: args[0] = requested seconds (or -1 when only the timezone is set),
    /// args[1] = requested nanoseconds.
    pub const SETTIME_SEC: usize = 0;
    pub const SETTIME_NSEC: usize = 1;
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
    pub _pad0: [u8; 3],
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
    /// Operation-specific numbers; see [`args`].
    pub args: [i64; 4],
    /// Operation-specific text (NUL-terminated), empty when the hook has none.
    pub text: [u8; DETAIL_TEXT_LEN],
}
const _: () = assert!(core::mem::size_of::<Event>() == 232);

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with every byte
    // covered by a field (padding is explicit), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::PolicyLevels {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Event {}
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
    fn unknown_action_bytes_fail_closed() {
        let policy = Policy {
            actions: [9; OP_SLOTS],
            ..Policy::default()
        };
        assert_eq!(policy.action(Operation::Settime), Action::Deny);
    }
}
