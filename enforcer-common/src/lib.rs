//! Types shared by the BPF programs and user space.
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]`, integer-only, with explicit
//! padding and a compile-time size check, so both sides agree on the layout without BTF.
//! A change to any layout here bumps [`ABI_VERSION`], which names the pin directory: a newer build
//! never silently reuses a map of an older layout.
//!
//! - [`abi`]: the pinned maps' keys and values (policies, index, counters, arming, in-flight calls);
//! - [`event`]: the ring buffer's event record;
//! - [`ops`]: operations, actions and hooks;
//! - [`syscalls`]: system call numbers and the rules that judge a call by its number;
//! - [`kernel_layout`]: kernel struct offsets handed to the programs.
#![no_std]

/// Version of the map and event layouts below. Part of the pin path (`/sys/fs/bpf/enforcer/v1`).
pub const ABI_VERSION: u32 = 1;

pub mod abi;
pub mod event;
pub mod kernel_layout;
pub mod ops;
pub mod syscalls;
mod table;
#[cfg(feature = "user")]
mod user;

pub use abi::{
    Budget, Config, Counters, FILTER_BITS, Inflight, LEVEL_UNUSED, LevelFilter, MAX_POLICY_LEVELS,
    OP_SLOTS, Policy, PolicyIndex, ProcessKey, SUPPRESSED_SLOT, SetupState, TAMPER_SLOT, config,
    policy_flags, protect,
};
pub use event::{
    COMM_LEN, EVENT_STR_LEN, EVENT_V1_SIZE, EVENT_V2, EVENT_VERSION, Event, kind, refused_by,
    source, string_slot,
};
pub use kernel_layout::{KernelLayout, TS_COMPAT};
pub use ops::{
    Action, Attach, HOOKS, Hook, HookSpec, OPERATIONS, OpSpec, Operation, SYSCALL_HOOKS, caps,
};
