//! The layouts of the pinned maps' keys and values and their flag bits: what both sides read and
//! write in the same bytes. Integer-only `#[repr(C)]` types with explicit padding and a
//! compile-time size check each; a change to any of them bumps [`crate::ABI_VERSION`].
use crate::{Action, Operation};

/// Room for operations in fixed-size arrays. Adding an operation below this count does not change
/// any layout (and so does not bump [`crate::ABI_VERSION`]).
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
const _: () = assert!(size_of::<Policy>() == 24);

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
    /// Syscall layer only (`attach --layer syscall`): the LSM programs leave this policy's
    /// cgroups alone, so it behaves the same on hosts with and without BPF LSM. Set only together
    /// with [`SYSCALL_LAYER`].
    pub const SYSCALL_ONLY: u32 = 1 << 2;
    /// Set by the Kubernetes node agent on the records it wrote: the agent changes or removes
    /// only records that carry it, and adopts them after a restart. The BPF programs never read
    /// it (they test the bits above one by one), so setting it changes no decision.
    pub const KUBERNETES: u32 = 1 << 3;
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
const _: () = assert!(size_of::<ProcessKey>() == 16);

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
const _: () = assert!(size_of::<SetupState>() == 32);

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
const _: () = assert!(size_of::<LevelFilter>() == 72);

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
const _: () = assert!(size_of::<PolicyIndex>() == 512);

/// Run-time switches, single entry of an array map. Read only on the report path (after a policy
/// asked for something), never by callers outside every policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`config`] bits.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Config>() == 8);

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
const _: () = assert!(size_of::<Counters>() == 4 * 8 * OP_SLOTS);

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

/// Value of the `SYS_INFLIGHT` map (the syscall layer): a guarded call in progress on one
/// thread, from `sys_enter` to `sys_exit`. Pinned, so the LSM programs and the syscall programs
/// (loaded at different times) share it, and its layout is part of [`crate::ABI_VERSION`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// x86_64 number of the call (see [`crate::syscalls::native`]).
    pub nr: i64,
    /// Its arguments, in the call's order.
    pub args: [u64; 6],
    /// cgroup v2 id whose policy decided at entry.
    pub policy_cgroup_id: u64,
    /// That policy's [`policy_flags`].
    pub flags: u32,
    /// [`Operation`] discriminant.
    pub op: u8,
    /// [`Action`] discriminant.
    pub action: u8,
    /// Set by the LSM programs when they denied this call.
    pub lsm_denied: u8,
    /// A 32-bit call.
    pub compat: u8,
}
const _: () = assert!(size_of::<Inflight>() == 72);

/// Value of the `BUDGET` map (the per-policy event budget): a policy's token bucket on one CPU.
/// Pinned with the other shared maps, so its layout is part of [`crate::ABI_VERSION`] too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Credit in nanoseconds, at most the burst's worth.
    pub credit_ns: u64,
    /// `CLOCK_MONOTONIC` time of the last event, in nanoseconds.
    pub last_ns: u64,
    /// Events suppressed since `since_ns`, not yet summarised.
    pub suppressed: u64,
    pub since_ns: u64,
}
const _: () = assert!(size_of::<Budget>() == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_action_bytes_fail_closed() {
        let policy = Policy {
            actions: [9; OP_SLOTS],
            ..Policy::default()
        };
        assert_eq!(policy.action(Operation::Settime), Action::Deny);
    }
}
