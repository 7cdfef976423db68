// Exists so that `enforcer` can name this crate as a build-dependency (cargo then rebuilds the BPF
// object when this crate changes); the programs themselves are the `enforcer` binary target.
#![no_std]
