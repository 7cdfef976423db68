//! Build, toolchain bootstrap and VM test harness for `enforcer`.
//!
//! The binary (`cargo xtask ...`) is a thin CLI over these modules; they are a library so later
//! subcommands (benches) can reuse the VM runner and so other tools can call [`bpf_env`].

pub mod cmd;
pub mod crds;
pub mod guest;
pub mod image;
pub mod initramfs;
pub mod k8s;
pub mod kernels;
pub mod libtest;
pub mod runtimes;
pub mod sysdeps;
pub mod toolchain;
pub mod vm;

use std::path::PathBuf;

pub use toolchain::bpf_env;

/// The workspace root (the parent of this crate), fixed at compile time: xtask always runs from
/// its own checkout, whatever the caller's working directory is.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
