//! `enforcer detach`: remove the policy of one cgroup, through the daemon or here.
use anyhow::Result;

use crate::{bpf::Bpf, cgroup, daemon::control, ops};

#[derive(clap::Args)]
pub struct Args {
    /// cgroup v2 directory or numeric cgroup id, as given to `attach`.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: String,
}

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
    // A numeric id may name a cgroup that is gone already; its policy can still be removed. A
    // path is resolved before any state is touched, as `attach` does.
    let (id, shown) = match args.cgroup.parse::<u64>() {
        Ok(id) => (id, id.to_string()),
        Err(_) => {
            let target = cgroup::resolve(&args.cgroup)?;
            (target.id, target.path)
        }
    };
    if control::forward(&control::Request::Detach {
        id,
        shown: shown.clone(),
    })? {
        return Ok(());
    }
    ops::detach(bpf, id, &shown)?;
    print!("{}", ops::detach_report(&shown));
    Ok(())
}
