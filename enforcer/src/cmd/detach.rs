//! `enforcer detach`: remove the policy of one cgroup.
use anyhow::Result;

use crate::{cgroup, loader, policy};

#[derive(clap::Args)]
pub struct Args {
    /// cgroup v2 directory or numeric cgroup id, as given to `attach`.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: String,
}

pub fn run(args: Args) -> Result<()> {
    let lock = loader::lock()?;
    let mut maps = loader::open_policy_maps_existing()?;
    // A numeric id may name a cgroup that is gone already; its policy can still be removed.
    let (id, shown) = match args.cgroup.parse::<u64>() {
        Ok(id) => (id, id.to_string()),
        Err(_) => {
            let target = cgroup::resolve(&args.cgroup)?;
            (target.id, target.path)
        }
    };
    if maps.policies.get(&id, 0).is_err() {
        anyhow::bail!(crate::ExitError::no_policy(&shown));
    }
    remove_policy(&mut maps, id)?;
    drop(lock);
    println!("detached {shown}");
    Ok(())
}

/// Removes the policy of cgroup `id`, which must have one (also used by `enforcer check`). The
/// caller holds the [`loader::StateLock`].
pub fn remove_policy(maps: &mut loader::PolicyMaps, id: u64) -> Result<()> {
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
    Ok(())
}
