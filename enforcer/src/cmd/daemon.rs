//! `enforcer daemon`: the node agent ([`crate::daemon::agent`]).
//!
//! It adopts the pinned programs (loading and pinning them only when absent), then runs the
//! agent: the single consumer of the ring buffer, writing every event as a JSON line to stdout
//! and to any number of `enforcer tail` sessions, carrying out policy changes for the CLI, and
//! serving Prometheus metrics and health probes when asked. Enforcement never depends on it: it
//! holds no link, so stopping or killing it leaves every program, map and policy in force.
//!
//! With `--kubernetes` it also runs the Kubernetes node agent ([`crate::kubernetes::agent`])
//! on the same runtime: policies follow the pods of this node as the API states them, and events
//! and metrics carry the pods' names.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context, Result};

use crate::{
    bpf::{self, LoaderError},
    daemon::{
        self,
        agent::{Installed, Settings},
    },
    kubernetes,
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
    /// Run the Kubernetes node agent: enforce the ContainerPolicies and ClusterContainerPolicies
    /// on the pods of this node (in-cluster config unless --kubeconfig is given).
    #[arg(long)]
    pub kubernetes: bool,
    /// The kubeconfig to reach the apiserver with, instead of the in-cluster config.
    #[arg(long, value_name = "PATH", requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// The node this agent serves (default: the NODE_NAME environment variable).
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    pub node_name: Option<String>,
}

/// What `--layer` chooses for the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DaemonLayer {
    Lsm,
    Syscall,
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Before anything else: a missing node name or apiserver is the deployment's error, found
    // before the kernel is touched.
    let cluster = if args.kubernetes {
        let node = kubernetes::agent::node_name(args.node_name.clone())?;
        let client = runtime.block_on(kubernetes::agent::connect(args.kubeconfig.as_deref()))?;
        Some((client, node))
    } else {
        None
    };
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
    runtime.block_on(async {
        let (names, kubernetes_ready) = match cluster {
            Some((client, node)) => {
                // The registry the daemon's events and metrics read the pods' names from.
                let names = kubernetes::names::Names::default();
                let ready = Arc::new(AtomicBool::new(false));
                let (agent_names, agent_ready) = (names.clone(), Arc::clone(&ready));
                tokio::spawn(async move {
                    if let Err(err) =
                        kubernetes::agent::run(client, node, bpf, agent_names, agent_ready).await
                    {
                        eprintln!("enforcer: kubernetes: the node agent stopped: {err:#}");
                    }
                });
                (Some(names), Some(ready))
            }
            None => (None, None),
        };
        daemon::agent::serve(
            bpf,
            Settings {
                installed,
                metrics: args.metrics,
                names,
                kubernetes_ready,
            },
        )
        .await
    })
}
