//! User space's side of the shared types: `aya::Pod`, so they can be read from and written to
//! maps (only with the `user` feature; the BPF programs do not link aya).
use crate::{
    Budget, Config, Counters, Event, Inflight, KernelLayout, Policy, PolicyIndex, ProcessKey,
    SetupState,
};

// SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with every byte
// covered by a field (padding is explicit), so any bit pattern is a valid value.
unsafe impl aya::Pod for Policy {}
unsafe impl aya::Pod for PolicyIndex {}
unsafe impl aya::Pod for Counters {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for KernelLayout {}
unsafe impl aya::Pod for ProcessKey {}
unsafe impl aya::Pod for SetupState {}
unsafe impl aya::Pod for Inflight {}
unsafe impl aya::Pod for Budget {}
