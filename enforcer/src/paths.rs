//! Every filesystem path enforcer owns or mounts, in one place: the bpffs pins, the run
//! directory with its locks and sockets, and the kernel filesystems it reads. A path that moves
//! moves here, and a reader sees at a glance what enforcer leaves on a node.
use std::path::PathBuf;

/// Where bpffs is (or gets) mounted.
pub const BPF_FS: &str = "/sys/fs/bpf";
/// The bpffs magic number (`statfs`), to tell a mounted bpffs from a plain directory.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Every pin of every map ABI version, one `v<N>` directory per version.
pub const PIN_BASE: &str = "/sys/fs/bpf/enforcer";
/// Where securityfs is (or gets) mounted; it lists the active LSMs.
pub const SECURITYFS: &str = "/sys/kernel/security";
/// The running kernel's BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Held (flock) by every command that changes pinned state.
pub const STATE_LOCK: &str = "/run/enforcer.lock";
/// The daemon's directory (mode 0700).
pub const RUN_DIR: &str = "/run/enforcer";
/// The daemon's event stream, read by `enforcer tail`.
pub const EVENT_SOCKET: &str = "/run/enforcer/events.sock";
/// The daemon's control socket: `attach`, `detach`, `apply` and `list` go through it.
pub const CONTROL_SOCKET: &str = "/run/enforcer/control.sock";
/// Held (flock) by the running daemon; holds its pid.
pub const DAEMON_LOCK: &str = "/run/enforcer/daemon.lock";

/// The pin directory of map ABI version `abi`: `maps/`, `links/` and `next/` live in it.
pub fn pin_dir(abi: u32) -> PathBuf {
    PathBuf::from(PIN_BASE).join(format!("v{abi}"))
}

/// Where the benches' do-nothing programs pin their links.
#[cfg(feature = "testing")]
pub const BENCH_PINS: &str = "/sys/fs/bpf/enforcer-bench";
