//! `enforcer detach`: remove the policy of one cgroup.
use anyhow::Result;
use enforcer_common::Policy;

use crate::{bpf, cgroup, daemon::control, policy};

#[derive(clap::Args)]
pub struct Args {
    /// cgroup v2 directory or numeric cgroup id, as given to `attach`.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: String,
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
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
    execute(bpf, id, &shown)?;
    print!("{}", report(&shown));
    Ok(())
}

/// Removes the policy of cgroup `id` (`shown` names it in messages) under the state lock; returns
/// the policy removed. The daemon runs this for a forwarded `detach`.
pub fn execute(bpf: bpf::Bpf, id: u64, shown: &str) -> Result<Policy> {
    let lock = bpf.lock()?;
    let mut maps = bpf.open_policy_maps()?;
    let Ok(removed) = maps.policies.get(&id, 0) else {
        anyhow::bail!(crate::error::ExitError::no_policy(shown));
    };
    remove_policy(&mut maps, id)?;
    drop(lock);
    Ok(removed)
}

/// What `detach` prints once the policy is gone.
pub fn report(shown: &str) -> String {
    format!("detached {shown}\n")
}

/// Removes the policy of cgroup `id`, which must have one (also used by `enforcer check`). The
/// caller holds the [`bpf::StateLock`].
pub fn remove_policy(maps: &mut bpf::PolicyMaps, id: u64) -> Result<()> {
    // The policy goes first, then its index bit, then its counters: the reverse of attach.
    maps.policies.remove(&id)?;
    let remaining: Vec<(u64, u32)> = maps
        .policies()?
        .into_iter()
        .map(|(id, policy)| (id, policy.level))
        .collect();
    let updates = policy::index_updates(&maps.current_index()?, &remaining)?;
    maps.write_index(&updates)?;
    let _ = maps.counters.remove(&id);
    bpf::sync_syscall_layer(maps)?;
    Ok(())
}
