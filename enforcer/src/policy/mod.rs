//! What a policy is in user space: the operations under each action compiled into the kernel's
//! per-cgroup record, its arming and layer, and how it reads in one line. Pure: no I/O, so every
//! rule here is unit-tested on the host. The policy file is [`mod@file`], the kernel's index of policy
//! depths [`mod@index`].
use std::collections::BTreeMap;

use enforcer_common::{Action, MAX_POLICY_LEVELS, OPERATIONS, Operation, Policy, policy_flags};
use thiserror::Error;

mod file;
mod index;

pub use file::parse_file;
pub use index::index_updates;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown operation '{0}'; known operations: {known}, or 'all'", known = known_names())]
    UnknownOperation(String),
    #[error(
        "operation '{op}' is given both as {first} and as {second}; name it under one action only"
    )]
    Conflict {
        op: &'static str,
        first: &'static str,
        second: &'static str,
    },
    #[error("an empty operation name in '{0}'; use a comma list such as 'settime' or 'all'")]
    EmptyName(String),
    #[error("no operation given; pass at least one of --deny, --audit or --kill")]
    Nothing,
    #[error(
        "policies would sit at {0} different cgroup depths; at most {MAX_POLICY_LEVELS} are supported: attach at a depth already in use (`enforcer list`)"
    )]
    TooManyLevels(usize),
    #[error("{file}: {message}; see the policy file format in the README")]
    File { file: String, message: String },
    #[error("{file}: cgroup {cgroup} is listed twice; give each cgroup one entry")]
    Duplicate { file: String, cgroup: String },
}

/// When a process in a covered cgroup becomes subject to the policy (workload arming).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// From its first successful exec after it entered the cgroup: a container runtime's setup
    /// before that exec is not denied. Every descendant of a subject process is subject.
    Exec,
    /// At once: everything in the cgroup is subject, the runtime's setup included.
    Immediate,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Immediate => "immediate",
        }
    }

    /// The arming a policy holds.
    pub fn of(policy: &Policy) -> Self {
        if policy.flags & policy_flags::ARM_EXEC != 0 {
            Self::Exec
        } else {
            Self::Immediate
        }
    }

    /// Sets this arming in `policy`'s flags.
    pub fn apply(self, policy: &mut Policy) {
        match self {
            Self::Exec => policy.flags |= policy_flags::ARM_EXEC,
            Self::Immediate => policy.flags &= !policy_flags::ARM_EXEC,
        }
    }
}

/// Which programs act on a policy (`attach --layer`, the policy file's `layer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    /// The BPF LSM hooks.
    Lsm,
    /// Raw tracepoints at the system call boundary only: audit and kill, for kernels without
    /// BPF LSM.
    Syscall,
    /// LSM enforcement plus the syscall layer's return values and EPERM attribution.
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

/// `deny=mount,keyctl audit=settime`: a policy in one line, for diffs and messages.
pub fn summary(policy: &Policy) -> String {
    let mut by_action: BTreeMap<Action, Vec<&str>> = BTreeMap::new();
    for (op, action) in describe(policy) {
        by_action.entry(action).or_default().push(op.name());
    }
    let mut words: Vec<String> = by_action
        .into_iter()
        .map(|(action, ops)| format!("{}={}", action.name(), ops.join(",")))
        .collect();
    if Arm::of(policy) == Arm::Exec {
        words.push("arm=exec".to_owned());
    }
    words.join(" ")
}

fn known_names() -> String {
    OPERATIONS
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a comma list of operation names, or `all`.
pub fn parse_ops(list: &str) -> Result<Vec<Operation>, PolicyError> {
    let mut ops = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(PolicyError::EmptyName(list.to_owned()));
        }
        if name == "all" {
            ops.extend(every_operation());
            continue;
        }
        let op = Operation::from_name(name)
            .ok_or_else(|| PolicyError::UnknownOperation(name.to_owned()))?;
        ops.push(op);
    }
    ops.sort();
    ops.dedup();
    Ok(ops)
}

/// Builds the policy from the operations named under each action. An operation may appear under
/// one action only; operations not named are allowed.
pub fn compile(rules: &[(Action, Vec<Operation>)], level: u32) -> Result<Policy, PolicyError> {
    let mut policy = Policy {
        level,
        ..Policy::default()
    };
    let mut any = false;
    for (action, ops) in rules {
        for &op in ops {
            let slot = &mut policy.actions[op as usize];
            let previous = Action::from_u8(*slot).unwrap_or_default();
            if previous != Action::Allow && previous != *action {
                return Err(PolicyError::Conflict {
                    op: op.name(),
                    first: previous.name(),
                    second: action.name(),
                });
            }
            *slot = *action as u8;
            any = true;
        }
    }
    if !any {
        return Err(PolicyError::Nothing);
    }
    Ok(policy)
}

/// Every operation, in table order (`all`).
pub fn every_operation() -> Vec<Operation> {
    OPERATIONS.iter().map(|spec| spec.op).collect()
}

/// The non-allow actions of a policy, in table order, for display.
pub fn describe(policy: &Policy) -> Vec<(Operation, Action)> {
    OPERATIONS
        .iter()
        .map(|spec| (spec.op, policy.action(spec.op)))
        .filter(|(_, action)| *action != Action::Allow)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        assert_eq!(parse_ops("settime").unwrap(), vec![Operation::Settime]);
        assert_eq!(
            parse_ops(" settime , settime").unwrap(),
            vec![Operation::Settime]
        );
        let all = parse_ops("all").unwrap();
        assert_eq!(all.len(), OPERATIONS.len());
    }

    #[test]
    fn rejects_unknown_and_empty_names() {
        assert_eq!(
            parse_ops("settime,fly"),
            Err(PolicyError::UnknownOperation("fly".into()))
        );
        assert!(matches!(
            parse_ops("settime,"),
            Err(PolicyError::EmptyName(_))
        ));
        let message = PolicyError::UnknownOperation("fly".into()).to_string();
        assert!(message.contains("settime"), "{message}");
    }

    #[test]
    fn compiles_actions_into_slots() {
        let policy = compile(&[(Action::Deny, vec![Operation::Settime])], 2).unwrap();
        assert_eq!(policy.action(Operation::Settime), Action::Deny);
        assert_eq!(policy.level, 2);
        assert_eq!(describe(&policy), vec![(Operation::Settime, Action::Deny)]);
    }

    #[test]
    fn one_operation_under_two_actions_is_a_conflict() {
        let err = compile(
            &[
                (Action::Deny, vec![Operation::Settime]),
                (Action::Audit, every_operation()),
            ],
            1,
        )
        .unwrap_err();
        assert_eq!(
            err,
            PolicyError::Conflict {
                op: "settime",
                first: "deny",
                second: "audit"
            }
        );
    }

    #[test]
    fn an_empty_policy_is_refused() {
        assert_eq!(
            compile(&[(Action::Deny, Vec::new())], 1),
            Err(PolicyError::Nothing)
        );
    }
}
