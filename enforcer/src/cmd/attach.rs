//! `enforcer attach`: install (on first use) and set the policy of one cgroup.
use anyhow::Result;
use enforcer_common::{Action, Counters, Policy, policy_flags};

use crate::{bpf, cgroup, container, daemon::control, policy};

#[derive(clap::Args)]
pub struct Args {
    /// cgroup v2 directory (absolute, or relative to the cgroup2 mount) or numeric cgroup id.
    #[arg(long, value_name = "PATH|ID", required_unless_present = "container")]
    pub cgroup: Option<String>,
    /// A container id (full, or a unique prefix): its cgroup, from runc or crun state or the
    /// cgroup names of docker, containerd, CRI-O and podman. Arms at `exec` unless told.
    #[arg(long, value_name = "ID", conflicts_with = "cgroup")]
    pub container: Option<String>,
    /// Refuse these operations with EPERM and report them (comma list, or `all`).
    #[arg(long, value_name = "OPS", value_parser = crate::cmd::meta::Ops)]
    pub deny: Option<String>,
    /// Permit these operations and report them.
    #[arg(long, value_name = "OPS", value_parser = crate::cmd::meta::Ops)]
    pub audit: Option<String>,
    /// Kill the caller with SIGKILL, refuse and report.
    #[arg(long, value_name = "OPS", value_parser = crate::cmd::meta::Ops)]
    pub kill: Option<String>,
    /// Which programs act: `lsm` (the BPF LSM hooks), `syscall` (raw tracepoints at the system
    /// call boundary only: audit and kill, for kernels without BPF LSM) or `both` (LSM
    /// enforcement plus the syscall layer's return values and EPERM attribution).
    #[arg(long, value_enum, default_value_t = Layer::Lsm)]
    pub layer: Layer,
    /// When a process in the cgroup becomes subject: `exec` (from its first exec after it
    /// entered the cgroup: a container runtime's setup is not denied) or `immediate`. Default:
    /// `exec` for a cgroup that is or holds containers (by the runtimes' cgroup names),
    /// `immediate` otherwise.
    #[arg(long, value_enum, value_name = "WHEN")]
    pub arm: Option<policy::Arm>,
}

/// `attach --layer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    Lsm,
    Syscall,
    Both,
}

impl Layer {
    /// The [`policy_flags`] this layer sets.
    pub fn flags(self) -> u32 {
        match self {
            Self::Lsm => 0,
            Self::Syscall => policy_flags::SYSCALL_LAYER | policy_flags::SYSCALL_ONLY,
            Self::Both => policy_flags::SYSCALL_LAYER,
        }
    }

    /// The layer a policy's flags stand for.
    pub fn of(policy: &Policy) -> Self {
        if policy.flags & policy_flags::SYSCALL_ONLY != 0 {
            Self::Syscall
        } else if policy.flags & policy_flags::SYSCALL_LAYER != 0 {
            Self::Both
        } else {
            Self::Lsm
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Lsm => "lsm",
            Self::Syscall => "syscall",
            Self::Both => "both",
        }
    }
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    // Everything the user typed is checked before any state changes.
    let target = match (&args.cgroup, &args.container) {
        (_, Some(id)) => container::resolve(id)?,
        (Some(spec), None) => cgroup::resolve(spec)?,
        (None, None) => unreachable!("clap requires --cgroup or --container"),
    };
    // Arming needs the LSM layer's programs; a container's cgroup holds one by definition.
    let default = if args.layer == Layer::Syscall {
        policy::Arm::Immediate
    } else if args.container.is_some() {
        policy::Arm::Exec
    } else {
        default_arm(&target)
    };
    let mut new_policy = policy::compile(
        &[
            (Action::Deny, args.deny.as_deref()),
            (Action::Audit, args.audit.as_deref()),
            (Action::Kill, args.kill.as_deref()),
        ],
        target.level,
    )?;
    if args.layer == Layer::Syscall && args.deny.is_some() {
        anyhow::bail!(crate::error::ExitError::not_in_layer(
            "--deny needs the LSM layer: a program at the system call boundary (a raw tracepoint) cannot change a call's result; use --audit or --kill with --layer syscall, or --layer lsm|both on a kernel with BPF LSM".to_owned()
        ));
    }
    new_policy.flags |= args.layer.flags();
    if args.layer == Layer::Syscall && args.arm == Some(policy::Arm::Exec) {
        anyhow::bail!(crate::error::ExitError::not_in_layer(
            "--arm exec needs the LSM layer: workload arming is kept by programs on fork, exec and cgroup moves that are loaded with the LSM programs; use --layer both, or --arm immediate with --layer syscall".to_owned()
        ));
    }
    args.arm.unwrap_or(default).apply(&mut new_policy);
    // With a daemon up, it makes the change (and logs it); the request is already validated.
    if control::forward(&control::Request::Attach {
        cgroup: (&target).into(),
        policy: new_policy.into(),
    })? {
        return Ok(());
    }
    execute(bpf, &target, new_policy)?;
    print!("{}", report(&target, &new_policy));
    Ok(())
}

/// `exec` for a cgroup that is or holds containers, else `immediate`.
pub fn default_arm(target: &cgroup::Cgroup) -> policy::Arm {
    if cgroup::holds_containers(target) {
        policy::Arm::Exec
    } else {
        policy::Arm::Immediate
    }
}

/// Sets the validated `new_policy` on `target` under the state lock, installing the programs on
/// first use; returns the policy it replaced. The daemon runs this for a forwarded `attach`.
pub fn execute(
    bpf: bpf::Bpf,
    target: &cgroup::Cgroup,
    new_policy: Policy,
) -> Result<Option<Policy>> {
    let lock = bpf.lock()?;
    // A syscall-only policy needs no LSM program, so it works where BPF LSM is refused.
    let mut maps = if Layer::of(&new_policy) == Layer::Syscall {
        bpf::install_maps_only(&lock)?
    } else {
        bpf::install_programs(&lock)?
    };
    let previous = maps.policies.get(&target.id, 0).ok();
    set_policy(&mut maps, target, new_policy)?;
    drop(lock);
    Ok(previous)
}

/// What `attach` prints once the policy is set.
pub fn report(target: &cgroup::Cgroup, new_policy: &Policy) -> String {
    let summary: Vec<String> = policy::describe(new_policy)
        .into_iter()
        .map(|(op, action)| format!("{}={}", op.name(), action.name()))
        .collect();
    let layer = match Layer::of(new_policy) {
        Layer::Lsm => String::new(),
        layer => format!(" layer={}", layer.name()),
    };
    format!(
        "attached {} (id {}): {} arm={}{layer}\n",
        target.path,
        target.id,
        summary.join(" "),
        policy::Arm::of(new_policy).name()
    )
}

/// Sets `new_policy` on `target` in the installed maps, replacing any policy it had (also used by
/// `enforcer check`). The caller holds the [`bpf::StateLock`].
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
