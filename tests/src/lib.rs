//! Integration tests that run inside the test VM, against a real kernel with BPF LSM active.
//!
//! `cargo xtask test` builds this crate's test binary and the `probe` helper statically, boots each
//! kernel with them in an initramfs, and runs the tests one at a time as root. The enforcer binary
//! is found through `ENFORCER_BIN`, the probe through `PROBE_BIN`. Nothing here mocks the kernel:
//! every assertion reads what the kernel did (errno, mounts, keys, clock, events, counters).
#![cfg(test)]

mod apply;
mod boot;
mod check;
mod control;
mod daemon;
mod events;
mod harness;
mod matrix;
mod policy;
mod runtime_attacks;
mod runtimes;
mod security;
mod syscall;
mod upgrade;
