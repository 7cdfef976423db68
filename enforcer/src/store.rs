//! The policy store: the one place that writes a policy into the kernel's maps or removes it, in
//! the order that keeps every intermediate state safe for the programs reading them. Every
//! writer (attach, detach, apply, record, check, the daemon) goes through here, under the state
//! lock.
use anyhow::Result;
use enforcer_common::{Counters, Policy};

use crate::{bpf, cgroup, policy};

/// Sets `new_policy` on `target` in the installed maps, replacing any policy it had. The caller holds the [`bpf::StateLock`].
pub fn set_policy(
    maps: &mut bpf::PolicyMaps,
    target: &cgroup::Cgroup,
    new_policy: Policy,
) -> Result<()> {
    let mut placed: Vec<(u64, u32)> = maps
        .policies()?
        .into_iter()
        .filter(|(id, _)| *id != target.id)
        .map(|(id, policy)| (id, policy.level))
        .collect();
    placed.push((target.id, target.level));
    // Computed before anything is written, so a refusal leaves the kernel's state as it was.
    let index_updates = policy::index_updates(&maps.current_index()?, &placed)?;

    // Counters first, then the policy, then the index that makes it visible: the programs never
    // see a policy without its counters, and replacing a policy keeps its counts.
    if maps.counters.get(&target.id, 0).is_err() {
        let zeroes = vec![Counters::default(); aya::util::nr_cpus().map_err(|(_, e)| e)?];
        maps.counters
            .insert(target.id, aya::maps::PerCpuValues::try_from(zeroes)?, 0)?;
    }
    maps.policies.insert(target.id, new_policy, 0)?;
    maps.write_index(&index_updates)?;
    bpf::sync_syscall_layer(maps)?;
    clear_setup_entries(maps, target)?;
    Ok(())
}

/// Workload arming: the processes already in `target`'s subtree are subject at once, whatever
/// they were under an earlier policy. Runs after the policy is in force, so a runtime's setup
/// process that enters later is exempted by the kernel as usual; one that was mid-setup in the
/// subtree now is subject (its container may fail to start).
fn clear_setup_entries(maps: &mut bpf::PolicyMaps, target: &cgroup::Cgroup) -> Result<()> {
    let inside: std::collections::HashSet<u32> =
        cgroup::processes_below(target)?.into_iter().collect();
    let stale: Vec<_> = maps
        .exempt
        .keys()
        .filter_map(Result::ok)
        .filter(|key| inside.contains(&key.tgid))
        .collect();
    for key in stale {
        // Gone already (exec or exit) is as good as removed.
        let _ = maps.exempt.remove(&key);
    }
    Ok(())
}

/// Removes the policy of cgroup `id`, which must have one. The
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
