//! `enforcer attach`: validate the user's request, then hand it to the daemon or set it here.
use std::ffi::OsStr;

use anyhow::Result;
use clap::builder::{PossibleValue, TypedValueParser};
use enforcer_common::{Action, OPERATIONS};

use crate::{
    bpf::Bpf,
    cgroup, container,
    daemon::control,
    ops,
    policy::{self, Layer, parse_ops},
};

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
    #[arg(long, value_name = "OPS", value_parser = Ops)]
    pub deny: Option<String>,
    /// Permit these operations and report them.
    #[arg(long, value_name = "OPS", value_parser = Ops)]
    pub audit: Option<String>,
    /// Kill the caller with SIGKILL, refuse and report.
    #[arg(long, value_name = "OPS", value_parser = Ops)]
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

pub fn run(args: Args, bpf: Bpf) -> Result<()> {
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
        ops::default_arm(&target)
    };
    let named = |list: &Option<String>| list.as_deref().map_or(Ok(Vec::new()), parse_ops);
    let mut new_policy = policy::compile(
        &[
            (Action::Deny, named(&args.deny)?),
            (Action::Audit, named(&args.audit)?),
            (Action::Kill, named(&args.kill)?),
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
    ops::attach(bpf, &target, new_policy)?;
    print!("{}", ops::attach_report(&target, &new_policy));
    Ok(())
}

/// The values of `--deny`, `--audit` and `--kill`: a comma list of operation names or `all`.
/// Any text passes here (the policy compiler judges it, with its own exit code); the names are
/// declared so that `--help` and the shell completions list them, with what each covers.
#[derive(Clone, Copy)]
pub struct Ops;

impl TypedValueParser for Ops {
    type Value = String;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        Ok(value.to_string_lossy().into_owned())
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            OPERATIONS
                .iter()
                .map(|spec| PossibleValue::new(spec.name).help(spec.summary))
                .chain([PossibleValue::new("all").help("every operation")]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_values_are_the_tables_and_all() {
        let values: Vec<String> = Ops
            .possible_values()
            .expect("values")
            .map(|value| value.get_name().to_owned())
            .collect();
        assert_eq!(values.len(), OPERATIONS.len() + 1);
        assert_eq!(values.last().map(String::as_str), Some("all"));
    }
}
