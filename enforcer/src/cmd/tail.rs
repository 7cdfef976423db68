//! `enforcer tail`: a live view of violation events.
//!
//! When `enforcer daemon` runs, its event stream is read (any number of tails see every event);
//! otherwise the pinned ring buffer is consumed directly, with the same drain logic as the daemon.
//! Either way the events are rendered the same way ([`events::Output`]).
use anyhow::{Context, Result};

use crate::{
    bpf::Bpf,
    cgroup,
    events::{self, Filter, FollowError, Output, PodFilter},
};

#[derive(clap::Args)]
pub struct Args {
    /// Only events from this cgroup and its descendants.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,
    /// One JSON object per line (schema in the README).
    #[arg(long)]
    pub json: bool,
    /// Only events from pods of this Kubernetes namespace (names come from `enforcer daemon
    /// --kubernetes`, its node agent).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only events from the pod of this name (needs the daemon's node agent).
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,
    /// Only events from containers of this name (needs the daemon's node agent).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
}

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
    let pods = PodFilter {
        namespace: args.namespace,
        pod: args.pod,
        container: args.container,
    };
    let filter = match args.cgroup.as_deref().map(cgroup::resolve).transpose()? {
        Some(cgroup) => Some(Filter::subtree(cgroup.path).with_pods(pods)),
        None if pods.is_empty() => None,
        None => Some(Filter::default().with_pods(pods)),
    };
    let mut output = Output::new(args.json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime.block_on(events::follow(bpf, filter, &mut output, ctrl_c)) {
        Ok(()) | Err(FollowError::ReaderGone) => Ok(()),
        Err(FollowError::Failed(err)) => Err(err),
    }
}
