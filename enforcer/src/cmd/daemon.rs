//! `enforcer daemon`: the node agent ([`crate::daemon::agent`]).
//!
//! It adopts the pinned programs (loading and pinning them only when absent), then runs the
//! agent: the single consumer of the ring buffer, writing every event as a JSON line to stdout
//! and to any number of `enforcer tail` sessions, carrying out policy changes for the CLI, and
//! serving Prometheus metrics when asked. Enforcement never depends on it: it holds no link, so
//! stopping or killing it leaves every program, map and policy in force.
//!
//! With `--kubernetes` it also runs the Kubernetes node agent ([`crate::kubernetes::agent`])
//! on the same runtime: policies follow the pods of this node as the API states them.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};

use crate::{bpf, daemon, kubernetes};

#[derive(clap::Args)]
pub struct Args {
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given), e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
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
    /// Run the Kubernetes agent alone, on the maps without the LSM programs: what the host
    /// tests run on a kernel without BPF LSM (no event stream, no control socket).
    #[arg(long, hide = true, requires = "kubernetes")]
    pub agent_only: bool,
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
    if let (true, Some((client, node))) = (args.agent_only, cluster.clone()) {
        drop(bpf::install_maps_only(&bpf.lock()?)?);
        return runtime.block_on(run_agent_only(client, node, bpf));
    }
    let installed = {
        let lock = bpf.lock()?;
        bpf::install_programs_with_outcome(&lock)?.1
    };
    runtime.block_on(async {
        if let Some((client, node)) = cluster {
            // The registry the daemon's events and metrics read the pods' names from.
            let names = kubernetes::names::Names::default();
            tokio::spawn(async move {
                if let Err(err) = kubernetes::agent::run(client, node, bpf, names).await {
                    eprintln!("enforcer: kubernetes: the node agent stopped: {err:#}");
                }
            });
        }
        daemon::agent::serve(bpf, args.metrics, installed).await
    })
}

/// `--agent-only`: the Kubernetes agent alone until SIGTERM or SIGINT.
async fn run_agent_only(client: kube::Client, node: String, bpf: bpf::Bpf) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let names = kubernetes::names::Names::default();
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        stopped = kubernetes::agent::run(client, node, bpf, names) => stopped,
        _ = sigterm.recv() => Ok(()),
        _ = sigint.recv() => Ok(()),
    }
}
