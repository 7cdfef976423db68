//! `enforcer daemon`: the node agent ([`crate::daemon::agent`]).
//!
//! It adopts the pinned programs (loading and pinning them only when absent), then runs the
//! agent: the single consumer of the ring buffer, writing every event as a JSON line to stdout
//! and to any number of `enforcer tail` sessions, carrying out policy changes for the CLI, and
//! serving Prometheus metrics when asked. Enforcement never depends on it: it holds no link, so
//! stopping or killing it leaves every program, map and policy in force.
use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::{bpf, daemon};

#[derive(clap::Args)]
pub struct Args {
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given), e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    // First, so that a second daemon changes nothing at all.
    let _instance = daemon::lock_instance()?;
    let installed = {
        let lock = bpf.lock()?;
        bpf::install_programs_with_outcome(&lock)?.1
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(daemon::agent::serve(bpf, args.metrics, installed))
}
