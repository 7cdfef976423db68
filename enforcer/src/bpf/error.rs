//! Why loading, installing or opening the BPF side failed, each message ending with its fix.
//!
//! A variant that keeps its cause as the error `source` does not print it too: under `{:#}`
//! (how `main` prints errors) the cause follows once, after a colon.
use std::io;

use aya::Btf;
use aya::programs::ProgramError;
use thiserror::Error;

use crate::paths::KERNEL_BTF;

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("this needs root (CAP_SYS_ADMIN and CAP_BPF); run it as root")]
    NotPrivileged,
    #[error(
        "BPF LSM is not active on this kernel (active LSMs: {0}); add bpf to the boot parameter: lsm={0},bpf"
    )]
    LsmInactive(String),
    #[error(
        "this kernel refused to load the BPF LSM program '{0}' (EPERM before verification): {1}"
    )]
    LsmRefused(&'static str, crate::refusal::Refusal),
    #[error("the kernel has no LSM hook '{hook}' for program '{program}'")]
    MissingHook {
        program: &'static str,
        hook: &'static str,
        source: ProgramError,
    },
    #[error("the verifier rejected program '{program}'")]
    Rejected {
        program: &'static str,
        source: ProgramError,
    },
    #[error("nothing is enforced yet (no pins under {0}); start with `enforcer attach`")]
    NotInstalled(String),
    #[error(
        "the pins under {dir} are of map layout v{found}, newer than this enforcer's v{ours}, whose maps it cannot read; run the newer enforcer, or `enforcer reset` to remove every program and policy and start over"
    )]
    NewerAbi { dir: String, found: u32, ours: u32 },
    #[error(
        "the pins under {dir} are of the older map layout v{found} (this enforcer's is v{ours}); run `enforcer check`, `enforcer attach` or `enforcer daemon` of this enforcer to migrate them (policies and counters are carried over)"
    )]
    OlderAbi { dir: String, found: u32, ours: u32 },
    #[error(
        "the pins under {dir} are of map layout v{found}, which this enforcer cannot migrate (it reads {known}); run `enforcer reset` to remove every program and policy and start over"
    )]
    UnknownAbi {
        dir: String,
        found: u32,
        known: String,
    },
    #[error(
        "the maps pinned under {dir} do not have the layout this build expects ({detail}): the build that pinned them changed a map without changing ABI_VERSION; nothing was changed; run `enforcer reset` (every policy is removed) and attach again"
    )]
    AbiMismatch { dir: String, detail: String },
    #[error(
        "the upgrade stopped after replacing {replaced} of {of} programs (the others are still the previous build's, on the same maps, so every hook enforces); run the command again to finish"
    )]
    PartlyReplaced {
        replaced: usize,
        of: usize,
        source: Box<LoaderError>,
    },
    #[error(
        "kernel BTF is unavailable at {btf} ({0}); a kernel with CONFIG_DEBUG_INFO_BTF=y is needed",
        btf = KERNEL_BTF
    )]
    NoBtf(String),
    #[error(transparent)]
    KernelLayout(#[from] crate::kernel_layout::LayoutError),
    #[error("the BPF object has no {0} '{1}'; the build is broken, rebuild enforcer")]
    BrokenObject(&'static str, &'static str),
    #[error("{what}")]
    Bpf {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl LoaderError {
    /// The message and every cause after it, joined by `: ` (what `{:#}` prints through
    /// anyhow), for the places that print a `LoaderError` itself.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            text.push_str(": ");
            text.push_str(&err.to_string());
            cause = err.source();
        }
        text
    }

    pub(crate) fn bpf(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Bpf {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The running kernel's BTF, which every program load needs.
pub(super) fn kernel_btf() -> Result<Btf, LoaderError> {
    Btf::from_sys_fs().map_err(|err| LoaderError::NoBtf(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `main` prints `{:#}`: the cause must come once, not in the message and again as source.
    fn printed(err: LoaderError) -> String {
        format!("{:#}", anyhow::Error::from(err))
    }

    #[test]
    fn a_cause_is_printed_once() {
        let io = || LoaderError::io("cannot read /x", io::Error::other("boom"));
        assert_eq!(printed(io()), "cannot read /x: boom");
        assert_eq!(
            printed(LoaderError::bpf("cannot open /y", io::Error::other("boom"))),
            "cannot open /y: boom"
        );
        let partly = printed(LoaderError::PartlyReplaced {
            replaced: 1,
            of: 2,
            source: Box::new(io()),
        });
        assert_eq!(partly.matches("boom").count(), 1, "{partly}");
        assert!(
            partly.ends_with("to finish: cannot read /x: boom"),
            "{partly}"
        );
        let missing = printed(LoaderError::MissingHook {
            program: "settime",
            hook: "settime",
            source: ProgramError::NotLoaded,
        });
        let cause = ProgramError::NotLoaded.to_string();
        assert_eq!(missing.matches(&cause).count(), 1, "{missing}");
        assert_eq!(io().with_causes(), "cannot read /x: boom");
    }
}
