//! Every map of the object. Names stay under 15 bytes (the kernel cuts longer ones).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use enforcer_common::{
    Budget, Config, Counters, Inflight, Policy, PolicyIndex, ProcessKey, SetupState,
};

/// cgroup v2 id -> policy of that cgroup (and, through the level walk, of its descendants).
#[map(name = "POLICIES")]
pub static POLICIES: HashMap<u64, Policy> = HashMap::with_max_entries(16384, 0);

/// Index 0: the cgroup depths that hold a policy, with a membership filter each.
#[map(name = "POLICY_INDEX")]
pub static POLICY_INDEX: Array<PolicyIndex> = Array::with_max_entries(1, 0);

/// Policy cgroup id -> per-CPU decision counters. User space creates the entry with the policy.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuHashMap<u64, Counters> = PerCpuHashMap::with_max_entries(16384, 0);

/// Violation events for user space.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Index 0: events that could not be reserved on the ring buffer, per CPU.
#[map(name = "DROPPED")]
pub static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Index 0: run-time switches (debug logs; the bench build's event modes).
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Index 0: which build's programs are attached (a hash of the BPF object they were loaded from),
/// written by user space after the last link is pinned. No program reads it: it lets a newer
/// build notice that the pinned programs are not its own and replace them.
#[map(name = "BUILD")]
pub static BUILD: Array<u64> = Array::with_max_entries(1, 0);

/// Syscall layer: thread id -> the guarded call it is in, from `sys_enter` to `sys_exit`, for
/// threads in a cgroup whose policy wants the syscall layer. LRU, so a thread that never reaches
/// `sys_exit` (the layer detached mid-call) cannot fill it. Pinned, so the LSM programs and the
/// syscall programs (loaded at different times) share it.
#[map(name = "SYS_INFLIGHT")]
pub static SYS_INFLIGHT: LruHashMap<u32, Inflight> = LruHashMap::with_max_entries(16384, 0);

/// Workload arming: the container runtimes' setup processes (see `arming`), each with what it
/// was when it became setup (its executable, root and mount namespace). A process missing from
/// it is subject. LRU, so entries a lost event left behind age out instead of filling it; an
/// evicted live entry makes its process subject (fail closed).
#[map(name = "SETUP")]
pub static SETUP: LruHashMap<ProcessKey, SetupState> = LruHashMap::with_max_entries(16384, 0);

/// Tamper protection: the enforcer's own maps, programs and links and its bpffs, by
/// [`enforcer_common::protect::key`]. Written by user space from its pins after every load.
#[map(name = "PROTECTED")]
pub static PROTECTED: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// Per-policy event budget (see `budget`): policy cgroup id -> its bucket, per CPU. LRU, so
/// policies that are gone age out.
#[map(name = "BUDGET")]
pub static BUDGET: LruPerCpuHashMap<u64, Budget> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// Workload arming: writer thread id -> the process it is moving into a cgroup, and whether that
/// process was under a policy before the move (`(tgid << 32) | 1`), from `arm_move` (before the
/// migration) for `arm_attach` (after it). Not pinned: it only lives across one migration.
#[map(name = "MOVES")]
pub static MOVES: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);
