//! Exit codes and the errors that carry them: one code per kind of failure, so scripts can tell
//! them apart, and one place that maps an error chain to its code.
use crate::{bpf, cgroup, container, policy};

/// Exit codes, one per kind of failure, so scripts can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Failure = 1,
    // 2 is clap's usage error.
    BadPolicy = 3,
    BadCgroup = 4,
    CannotEnforce = 5,
    NotPrivileged = 6,
    NothingAttached = 7,
    AlreadyRunning = 8,
    DaemonGone = 9,
    UnknownContainer = 10,
    AmbiguousContainer = 11,
    /// The action needs a layer the request did not select (`--deny` with `--layer syscall`).
    NotInLayer = 12,
    /// `daemon --kubernetes` found neither a kubeconfig nor an in-cluster config, or no node name.
    NoCluster = 13,
    /// A command with state to undo was stopped by a signal and undid it first: 128 + the
    /// signal's number, what a shell reports for a process the signal ended.
    Hangup = 129,
    Interrupted = 130,
    Terminated = 143,
}

/// An error that is the user's to fix, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: Exit,
    message: String,
}

impl TryFrom<u8> for Exit {
    type Error = u8;

    fn try_from(code: u8) -> Result<Self, u8> {
        Ok(match code {
            1 => Self::Failure,
            3 => Self::BadPolicy,
            4 => Self::BadCgroup,
            5 => Self::CannotEnforce,
            6 => Self::NotPrivileged,
            7 => Self::NothingAttached,
            8 => Self::AlreadyRunning,
            9 => Self::DaemonGone,
            10 => Self::UnknownContainer,
            11 => Self::AmbiguousContainer,
            12 => Self::NotInLayer,
            13 => Self::NoCluster,
            129 => Self::Hangup,
            130 => Self::Interrupted,
            143 => Self::Terminated,
            other => return Err(other),
        })
    }
}

impl ExitError {
    /// An error the daemon ran into for us, with the exit code it sent (an unknown code, from a
    /// newer daemon, is a plain failure).
    pub fn from_wire(code: u8, message: String) -> Self {
        Self {
            code: Exit::try_from(code).unwrap_or(Exit::Failure),
            message,
        }
    }

    pub fn no_policy(cgroup: &str) -> Self {
        Self {
            code: Exit::NothingAttached,
            message: format!("{cgroup} has no policy; `enforcer list` shows the attached cgroups"),
        }
    }

    /// A second `enforcer daemon` while one runs.
    pub fn already_running(message: String) -> Self {
        Self {
            code: Exit::AlreadyRunning,
            message,
        }
    }

    /// A tail reading the daemon's event stream saw the daemon go away.
    pub fn daemon_gone(message: String) -> Self {
        Self {
            code: Exit::DaemonGone,
            message,
        }
    }

    /// The cgroup cannot be used for this (`record` on a cgroup with a policy).
    pub fn bad_cgroup(message: String) -> Self {
        Self {
            code: Exit::BadCgroup,
            message,
        }
    }

    pub fn not_in_layer(message: String) -> Self {
        Self {
            code: Exit::NotInLayer,
            message,
        }
    }

    /// `signal` stopped the command, which cleaned up before exiting.
    pub fn interrupted(signal: nix::sys::signal::Signal, message: String) -> Self {
        use nix::sys::signal::Signal;
        Self {
            code: match signal {
                Signal::SIGHUP => Exit::Hangup,
                Signal::SIGTERM => Exit::Terminated,
                _ => Exit::Interrupted,
            },
            message,
        }
    }

    pub fn no_cluster(message: String) -> Self {
        Self {
            code: Exit::NoCluster,
            message,
        }
    }

    pub fn cannot_enforce(message: String) -> Self {
        Self {
            code: Exit::CannotEnforce,
            message,
        }
    }

    pub fn not_privileged(message: String) -> Self {
        Self {
            code: Exit::NotPrivileged,
            message,
        }
    }
}

pub fn exit_code(err: &anyhow::Error) -> Exit {
    use bpf::LoaderError as L;
    for cause in err.chain() {
        if let Some(err) = cause.downcast_ref::<ExitError>() {
            return err.code;
        }
        if cause.is::<policy::PolicyError>() {
            return Exit::BadPolicy;
        }
        if let Some(err) = cause.downcast_ref::<container::ContainerError>() {
            return match err {
                container::ContainerError::Ambiguous { .. } => Exit::AmbiguousContainer,
                container::ContainerError::Cgroup(_) => Exit::BadCgroup,
                _ => Exit::UnknownContainer,
            };
        }
        if cause.is::<cgroup::CgroupError>() {
            return Exit::BadCgroup;
        }
        if let Some(err) = cause.downcast_ref::<L>() {
            return match err {
                L::NotPrivileged => Exit::NotPrivileged,
                L::LsmInactive(_)
                | L::LsmRefused(..)
                | L::NoBtf(_)
                | L::KernelLayout(_)
                | L::MissingHook { .. } => Exit::CannotEnforce,
                L::NotInstalled(_) => Exit::NothingAttached,
                _ => Exit::Failure,
            };
        }
    }
    Exit::Failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_survives_the_wire() {
        for code in 0..=u8::MAX {
            if let Ok(exit) = Exit::try_from(code) {
                assert_eq!(exit as u8, code);
                assert_eq!(ExitError::from_wire(code, String::new()).code, exit);
            }
        }
        assert_eq!(Exit::try_from(12), Ok(Exit::NotInLayer));
        assert_eq!(Exit::try_from(2), Err(2), "2 is clap's");
    }
}
