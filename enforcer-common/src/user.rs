//! User space's side of the shared types: `aya::Pod`, so they can be read from and written to
//! maps (only with the `user` feature; the BPF programs do not link aya).
use crate::{
    Budget, Config, Counters, Event, Inflight, KernelLayout, Policy, PolicyIndex, ProcessKey,
    SetupState,
};

/// Implements `aya::Pod` for types that are `#[repr(C)]`, made only of integers and integer
/// arrays, with every byte covered by a field (padding is explicit).
macro_rules! pod {
    ($($ty:ty),* $(,)?) => {$(
        // SAFETY: the type is #[repr(C)], made only of integers and integer arrays, with every
        // byte covered by a field (padding is explicit), so any bit pattern is a valid value.
        unsafe impl aya::Pod for $ty {}
    )*};
}

pod!(
    Policy,
    PolicyIndex,
    Counters,
    Config,
    Event,
    KernelLayout,
    ProcessKey,
    SetupState,
    Inflight,
    Budget
);
