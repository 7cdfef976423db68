//! Turning `--deny`/`--audit`/`--kill` lists into the kernel's per-cgroup policy value. Pure: no
//! I/O, so every rule here is unit-tested on the host.
use enforcer_common::{Action, OPERATIONS, Operation, Policy};
use thiserror::Error;

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
            ops.extend(OPERATIONS.iter().map(|spec| spec.op));
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

/// Builds the policy from (action, comma list) pairs. An operation may appear under one action
/// only; operations not named are allowed.
pub fn compile(rules: &[(Action, Option<&str>)], level: u32) -> Result<Policy, PolicyError> {
    let mut policy = Policy {
        level,
        ..Policy::default()
    };
    let mut any = false;
    for (action, list) in rules {
        let Some(list) = list else { continue };
        for op in parse_ops(list)? {
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

/// The non-allow actions of a policy, in table order, for display.
pub fn describe(policy: &Policy) -> Vec<(Operation, Action)> {
    OPERATIONS
        .iter()
        .map(|spec| (spec.op, policy.action(spec.op)))
        .filter(|(_, action)| *action != Action::Allow)
        .collect()
}

/// Distinct cgroup depths that hold policies, deepest first, as the BPF programs walk them.
pub fn levels(policies: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut levels: Vec<u32> = policies.into_iter().collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    levels
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
        let policy = compile(&[(Action::Deny, Some("settime"))], 2).unwrap();
        assert_eq!(policy.action(Operation::Settime), Action::Deny);
        assert_eq!(policy.level, 2);
        assert_eq!(describe(&policy), vec![(Operation::Settime, Action::Deny)]);
    }

    #[test]
    fn one_operation_under_two_actions_is_a_conflict() {
        let err = compile(
            &[
                (Action::Deny, Some("settime")),
                (Action::Audit, Some("all")),
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
            compile(&[(Action::Deny, None)], 1),
            Err(PolicyError::Nothing)
        );
    }

    #[test]
    fn levels_are_unique_and_deepest_first() {
        assert_eq!(levels([1, 3, 1, 2]), vec![3, 2, 1]);
    }
}
