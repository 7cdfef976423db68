//! `enforcer tail`: a live view of violation events.
//!
//! When `enforcer daemon` runs, its event stream is read (any number of tails see every event);
//! otherwise the pinned ring buffer is consumed directly, with the same drain logic as the daemon.
//! Either way the events are rendered the same way ([`events::Output`]).
use anyhow::{Context, Result};

use crate::{
    bpf::Bpf,
    cgroup,
    events::{self, Filter, FollowError, Output},
};

#[derive(clap::Args)]
pub struct Args {
    /// Only events from this cgroup and its descendants.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,
    /// One JSON object per line (schema in the README).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
    let filter = args
        .cgroup
        .as_deref()
        .map(cgroup::resolve)
        .transpose()?
        .map(|cgroup| Filter::subtree(cgroup.path));
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
