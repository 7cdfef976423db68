//! `enforcer list`: what is enforced now, with per-operation counters.
use anyhow::Result;

use crate::{bpf::Bpf, daemon::control, ops};

#[derive(clap::Args)]
pub struct Args {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
    if control::forward(&control::Request::List { json: args.json })? {
        return Ok(());
    }
    print!("{}", ops::list(bpf, args.json)?);
    Ok(())
}
