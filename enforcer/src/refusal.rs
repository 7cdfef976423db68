//! Why a kernel refused a BPF LSM program before the verifier ran (EPERM at `BPF_PROG_LOAD`):
//! what is known when it happens, so the message names a fix that fits this machine. With `bpf`
//! in the active LSM list, booting with `bpf` in `lsm=` changes nothing: something else refuses.
use std::{fmt, fs};

use crate::bpf;

const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

/// What was known about the machine when the load was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The active LSM list could not be read: BPF LSM may be missing or inactive.
    LsmListUnknown,
    /// `bpf` is an active LSM, so something else refuses the load.
    BpfActive {
        /// The active LSM list.
        lsms: String,
        /// The lockdown mode in force (`none`, `integrity`, `confidentiality`), when readable.
        lockdown: Option<String>,
        /// This process's seccomp mode (`Seccomp:` of /proc/self/status: 0 off, 1 strict, 2
        /// filter), when readable.
        seccomp: Option<u32>,
    },
}

impl Refusal {
    /// Looks at the machine now (right after the refusal).
    pub fn find() -> Self {
        match bpf::active_lsms() {
            Ok(lsms) if lsms.split(',').any(|lsm| lsm == "bpf") => Self::BpfActive {
                lockdown: fs::read_to_string(LOCKDOWN)
                    .ok()
                    .and_then(|modes| lockdown_mode(&modes)),
                seccomp: fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|status| seccomp_mode(&status)),
                lsms,
            },
            // Without bpf in the list the loader stops before loading (LsmInactive).
            _ => Self::LsmListUnknown,
        }
    }

    /// What was found, without the fix.
    pub fn finding(&self) -> String {
        match self {
            Self::LsmListUnknown => "BPF LSM programs cannot run here".to_owned(),
            Self::BpfActive {
                lsms,
                lockdown,
                seccomp,
            } => {
                let lockdown = lockdown.as_deref().unwrap_or("unknown");
                let seccomp = match seccomp {
                    Some(0) => "off",
                    Some(1) => "strict",
                    Some(2) => "filter",
                    _ => "unknown",
                };
                format!(
                    "bpf is an active LSM ({lsms}), so something else refuses BPF LSM programs here (lockdown: {lockdown}; seccomp of this process: {seccomp})"
                )
            }
        }
    }

    /// The fix that fits the finding.
    pub fn fix(&self) -> String {
        match self {
            Self::LsmListUnknown => {
                "boot a kernel with CONFIG_BPF_LSM=y and bpf in lsm=".to_owned()
            }
            Self::BpfActive { .. } => format!(
                "find what refuses bpf(BPF_PROG_LOAD) of LSM programs: lockdown mode ({LOCKDOWN}), a seccomp filter or sandbox policy on bpf() around this process (a container runtime's, systemd's SystemCallFilter), another LSM's policy (SELinux, AppArmor), or a hypervisor's kernel that forbids them; look at `dmesg` for the refusal"
            ),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.finding(), self.fix())
    }
}

/// The bracketed mode of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
fn lockdown_mode(modes: &str) -> Option<String> {
    let start = modes.find('[')? + 1;
    let end = start + modes[start..].find(']')?;
    Some(modes[start..end].to_owned())
}

fn seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|mode| mode.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_lockdown_and_seccomp_modes() {
        assert_eq!(
            lockdown_mode("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(lockdown_mode("none integrity"), None);
        assert_eq!(
            seccomp_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"),
            Some(2)
        );
    }

    #[test]
    fn with_bpf_active_the_fix_is_not_to_add_it() {
        let refusal = Refusal::BpfActive {
            lsms: "lockdown,capability,landlock,bpf".to_owned(),
            lockdown: Some("integrity".to_owned()),
            seccomp: Some(0),
        };
        let line = refusal.to_string();
        assert!(!line.contains("lsm="), "{line}");
        for named in ["lockdown: integrity", "seccomp", "another LSM", "dmesg"] {
            assert!(line.contains(named), "{named}: {line}");
        }
        assert!(Refusal::LsmListUnknown.fix().contains("bpf in lsm="));
    }
}
