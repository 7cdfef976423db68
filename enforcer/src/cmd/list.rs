//! `enforcer list`: what is enforced now, with per-operation counters.
use anyhow::Result;

use crate::{daemon::control, ops};

#[derive(clap::Args)]
pub struct Args {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if control::forward(&control::Request::List { json: args.json })? {
        return Ok(());
    }
    print!("{}", ops::list(args.json)?);
    Ok(())
}
