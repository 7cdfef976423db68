//! Loads, attaches and pins the BPF programs, opens the pinned maps, and replaces another build's
//! programs without a moment of enforcement lost.
//!
//! Everything lives under a bpffs directory named after the map ABI version
//! ([`enforcer_common::ABI_VERSION`]): `/sys/fs/bpf/enforcer/v1/{maps,links}`. Enforcement
//! outlives every `enforcer` process, and a build with another ABI never reuses an old map.
//! The `BUILD` map records which build's programs the links hold (a hash of the BPF object, see
//! `build_id`); it is written after the last link is pinned.
//!
//! [`install_programs`] (used by attach, apply, daemon and check) brings the kernel to this
//! build's programs:
//! - this build's programs are pinned: they are adopted as they are;
//! - nothing is pinned: the programs are loaded, attached and pinned;
//! - another build's programs of the same ABI are pinned: `replace_programs` loads this build's
//!   programs on the pinned maps (policies, counters, ring buffer and all), then per hook
//!   attaches the new program, pins its link in `next/` and renames that pin over the old one, so
//!   at every instant each hook has at least one program;
//! - an older ABI's pins are there: `migrate` loads this build into its own directory, copies
//!   the policies and counters over, attaches the new links, and only then removes the old pins;
//! - a newer ABI's pins are there: refused (this build cannot read their maps).
//!
//! Which object is loaded and which ABI directory is used is one explicit value, [`Bpf`], made
//! in `main` and handed to every command; the [`StateLock`] and the [`PolicyMaps`] carry it on.
mod attach;
#[cfg(feature = "testing")]
pub mod bench;
mod error;
mod install;
mod kernel;
mod map_names;
mod maps;
mod migrate;
mod object;
mod pins;
mod protect;
mod syscall_layer;

pub use error::LoaderError;
pub use install::{InstallOutcome, install_programs, install_programs_with_outcome};
pub use maps::{EventMaps, PolicyMaps, update_config};
pub use object::Bpf;
pub use pins::{StateLock, reset};
pub use syscall_layer::{install_maps_only, sync_syscall_layer};
