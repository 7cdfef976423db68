//! What every native host test binary needs: the enforcer binary under test, the host's cgroup v2
//! mount, and command output as text.
#![allow(dead_code, reason = "each test binary uses its own part")]

use std::{
    env,
    path::{Path, PathBuf},
};

/// `ENFORCER_BIN`, else the enforcer built beside the probe (`cargo xtask test` builds it).
pub fn enforcer_bin() -> PathBuf {
    if let Some(bin) = env::var_os("ENFORCER_BIN") {
        return bin.into();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_probe")).with_file_name("enforcer");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p enforcer`) or set ENFORCER_BIN",
        bin.display()
    );
    bin
}

/// The cgroup v2 mount: /sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup.
pub fn cgroup_root() -> PathBuf {
    for dir in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(dir).join("cgroup.procs").exists()
            && nix::sys::statfs::statfs(dir)
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        {
            return dir.into();
        }
    }
    panic!("no cgroup v2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup");
}

/// Command output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
