//! `enforcer daemon`: the node agent ([`crate::daemon::agent`]).
//!
//! It adopts the pinned programs (loading and pinning them only when absent), then runs the
//! agent: the single consumer of the ring buffer, writing every event as a JSON line to stdout
//! and to any number of `enforcer tail` sessions, carrying out policy changes for the CLI, and
//! serving Prometheus metrics and health probes when asked. Enforcement never depends on it: it
//! holds no link, so stopping or killing it leaves every program, map and policy in force.
use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::{
    bpf::{self, LoaderError},
    daemon::{
        self,
        agent::{Installed, Settings},
    },
};

#[derive(clap::Args)]
pub struct Args {
    /// Serve Prometheus metrics at http://ADDR/metrics, and the probes /healthz and /readyz
    /// (off unless given), e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Which programs the daemon installs: `lsm` (the BPF LSM programs and the maps) or
    /// `syscall` (the maps only, for kernels without BPF LSM: policies of `attach --layer
    /// syscall` audit and kill at the system call boundary).
    #[arg(long, value_enum, default_value_t = DaemonLayer::Lsm)]
    pub layer: DaemonLayer,
}

/// What `--layer` chooses for the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DaemonLayer {
    Lsm,
    Syscall,
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    // First, so that a second daemon changes nothing at all.
    let _instance = daemon::lock_instance()?;
    let installed = {
        let lock = bpf.lock()?;
        match args.layer {
            DaemonLayer::Lsm => bpf::install_programs_with_outcome(&lock)
                .map(|(_, outcome)| Installed::Programs(outcome))
                .map_err(|err| match err {
                    LoaderError::LsmInactive(_) | LoaderError::LsmRefused(..) => {
                        anyhow::Error::new(err).context(
                            "the daemon's default layer needs BPF LSM; on this kernel run `enforcer daemon --layer syscall` (policies of `attach --layer syscall` audit and kill without it)",
                        )
                    }
                    err => err.into(),
                })?,
            DaemonLayer::Syscall => {
                bpf::install_maps_only(&lock)?;
                Installed::MapsOnly
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(daemon::agent::serve(
        bpf,
        Settings {
            installed,
            metrics: args.metrics,
            names: None,
            kubernetes_ready: None,
        },
    ))
}
