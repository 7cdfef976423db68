//! Turning `--deny`/`--audit`/`--kill` lists into the kernel's per-cgroup policy value. Pure: no
//! I/O, so every rule here is unit-tested on the host.
use std::collections::BTreeMap;

use enforcer_common::{
    Action, LEVEL_UNUSED, LevelFilter, MAX_POLICY_LEVELS, OPERATIONS, Operation, Policy,
    PolicyIndex, policy_flags,
};
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
    #[error(
        "policies would sit at {0} different cgroup depths; at most {MAX_POLICY_LEVELS} are supported: attach at a depth already in use (`enforcer list`)"
    )]
    TooManyLevels(usize),
    #[error("{file}: {message}; see the policy file format in the README")]
    File { file: String, message: String },
    #[error("{file}: cgroup {cgroup} is listed twice; give each cgroup one entry")]
    Duplicate { file: String, cgroup: String },
}

/// A policy file (`enforcer apply -f`): the policies the kernel should hold.
///
/// ```yaml
/// policies:
///   - cgroup: /kubepods.slice/kubepods-pod1234.slice   # path or numeric id
///     deny: [mount, keyctl]
///     audit: [settime]
/// ```
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policies: Vec<FileEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    cgroup: CgroupSpec,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    audit: Vec<String>,
    #[serde(default)]
    kill: Vec<String>,
    /// `exec` or `immediate`; the cgroup's default when absent.
    #[serde(default)]
    arm: Option<Arm>,
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

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum CgroupSpec {
    Id(u64),
    Path(String),
}

/// One entry of a policy file: the cgroup as written, and its rules for [`compile`].
#[derive(Debug, PartialEq, Eq)]
pub struct FileRule {
    pub cgroup: String,
    pub rules: Vec<(Action, Option<String>)>,
    /// The entry's `arm`, if given.
    pub arm: Option<Arm>,
}

impl FileRule {
    /// The rules in the form [`compile`] takes.
    pub fn borrowed(&self) -> Vec<(Action, Option<&str>)> {
        self.rules
            .iter()
            .map(|(action, list)| (*action, list.as_deref()))
            .collect()
    }
}

/// Parses a policy file. Syntax errors and unknown keys name the line; duplicate cgroups (as
/// written) are refused. Operation names are checked by [`compile`].
pub fn parse_file(file: &str, text: &str) -> Result<Vec<FileRule>, PolicyError> {
    let parsed: PolicyFile = serde_yaml_ng::from_str(text).map_err(|err| PolicyError::File {
        file: file.to_owned(),
        message: err.to_string(),
    })?;
    let mut seen = std::collections::BTreeSet::new();
    let mut rules = Vec::new();
    for entry in parsed.policies {
        let cgroup = match entry.cgroup {
            CgroupSpec::Id(id) => id.to_string(),
            CgroupSpec::Path(path) => path,
        };
        if !seen.insert(cgroup.clone()) {
            return Err(PolicyError::Duplicate {
                file: file.to_owned(),
                cgroup,
            });
        }
        let list = |ops: Vec<String>| (!ops.is_empty()).then(|| ops.join(","));
        rules.push(FileRule {
            cgroup,
            rules: vec![
                (Action::Deny, list(entry.deny)),
                (Action::Audit, list(entry.audit)),
                (Action::Kill, list(entry.kill)),
            ],
            arm: entry.arm,
        });
    }
    Ok(rules)
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

/// The writes, in order, that take the kernel's policy index from `current` to one covering
/// `policies` (cgroup id, depth). Each intermediate value is safe for a program to read torn
/// against its predecessor; the rules are on [`PolicyIndex`].
pub fn index_updates(
    current: &PolicyIndex,
    policies: &[(u64, u32)],
) -> Result<Vec<PolicyIndex>, PolicyError> {
    let mut wanted: BTreeMap<u32, LevelFilter> = BTreeMap::new();
    for &(id, level) in policies {
        wanted
            .entry(level)
            .or_insert_with(|| LevelFilter {
                level,
                ..LevelFilter::default()
            })
            .insert(id);
    }
    let depths = wanted.len();
    let count = (current.count as usize).min(MAX_POLICY_LEVELS);
    let mut next = *current;
    // Slots already free may be reused now; slots freed by this update only in a later one.
    let mut reusable = (0..count).filter(|&i| current.slots[i].level == LEVEL_UNUSED);
    for slot in &mut next.slots[..count] {
        if slot.level != LEVEL_UNUSED {
            *slot = wanted.remove(&slot.level).unwrap_or_default();
        }
    }
    let mut grown = count;
    for filter in wanted.into_values() {
        let i = match reusable.next() {
            Some(i) => i,
            None if grown < MAX_POLICY_LEVELS => {
                grown += 1;
                grown - 1
            }
            None => return Err(PolicyError::TooManyLevels(depths)),
        };
        next.slots[i] = filter;
    }
    if grown == count {
        return Ok(vec![next]);
    }
    // Fill the new slots while `count` still hides them, then reveal them.
    let filled = next;
    next.count = grown as u32;
    Ok(vec![filled, next])
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

    fn slot_of(index: &PolicyIndex, level: u32) -> Option<&LevelFilter> {
        index.slots[..index.count as usize]
            .iter()
            .find(|slot| slot.level == level)
    }

    #[test]
    fn parses_a_policy_file() {
        let text = "policies:\n  - cgroup: /pod1\n    deny: [mount, keyctl]\n    audit: [settime]\n  - cgroup: 42\n    kill: [settime]\n";
        let rules = parse_file("p.yaml", text).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].cgroup, "/pod1");
        assert_eq!(
            rules[0].rules[0],
            (Action::Deny, Some("mount,keyctl".into()))
        );
        assert_eq!(rules[1].cgroup, "42");
        let policy = compile(&rules[0].borrowed(), 1).unwrap();
        assert_eq!(summary(&policy), "audit=settime deny=mount,keyctl");
    }

    #[test]
    fn a_policy_file_may_name_the_arming() {
        let text = "policies:\n  - cgroup: /pod1\n    deny: [all]\n    arm: exec\n  - cgroup: /plain\n    deny: [mount]\n    arm: immediate\n  - cgroup: /other\n    deny: [mount]\n";
        let rules = parse_file("p.yaml", text).unwrap();
        assert_eq!(
            rules.iter().map(|r| r.arm).collect::<Vec<_>>(),
            [Some(Arm::Exec), Some(Arm::Immediate), None]
        );
        let bad = "policies:\n  - cgroup: /pod1\n    deny: [all]\n    arm: later\n";
        assert!(
            parse_file("p.yaml", bad)
                .unwrap_err()
                .to_string()
                .contains("later")
        );
        let mut policy = compile(&rules[0].borrowed(), 1).unwrap();
        Arm::Exec.apply(&mut policy);
        assert_eq!(Arm::of(&policy), Arm::Exec);
        assert!(
            summary(&policy).ends_with(" arm=exec"),
            "{}",
            summary(&policy)
        );
        Arm::Immediate.apply(&mut policy);
        assert_eq!(Arm::of(&policy), Arm::Immediate);
    }

    #[test]
    fn a_bad_policy_file_names_the_line() {
        let unknown = "policies:\n  - cgroup: /pod1\n    denny: [mount]\n";
        let err = parse_file("p.yaml", unknown).unwrap_err().to_string();
        assert!(
            err.contains("p.yaml") && err.contains("denny") && err.contains("line 3"),
            "{err}"
        );
        let broken = "policies:\n  - cgroup: [\n";
        assert!(
            parse_file("p.yaml", broken)
                .unwrap_err()
                .to_string()
                .contains("line")
        );
        let twice =
            "policies:\n  - cgroup: /a\n    deny: [mount]\n  - cgroup: /a\n    deny: [keyctl]\n";
        assert!(matches!(
            parse_file("p.yaml", twice),
            Err(PolicyError::Duplicate { .. })
        ));
    }

    #[test]
    fn a_first_policy_fills_its_slot_before_revealing_it() {
        let steps = index_updates(&PolicyIndex::default(), &[(27, 1)]).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].count, 0, "the filled slot is still hidden");
        assert_eq!(steps[0].slots[0].level, 1);
        assert_eq!(steps[1].count, 1);
        assert!(slot_of(&steps[1], 1).unwrap().may_hold(27));
    }

    #[test]
    fn policies_at_one_depth_share_a_slot() {
        let first = index_updates(&PolicyIndex::default(), &[(27, 1)]).unwrap();
        let steps = index_updates(&first[1], &[(27, 1), (31, 1)]).unwrap();
        assert_eq!(steps.len(), 1);
        let slot = slot_of(&steps[0], 1).unwrap();
        assert!(slot.may_hold(27) && slot.may_hold(31));
    }

    #[test]
    fn slots_never_move_and_are_reused_only_later() {
        let one = index_updates(&PolicyIndex::default(), &[(10, 1), (20, 3)]).unwrap();
        let one = *one.last().unwrap();
        let slot_of_3 = one.slots.iter().position(|s| s.level == 3).unwrap();
        // Depth 1 goes away and depth 5 arrives in the same update: 5 may not take 1's slot.
        let two = index_updates(&one, &[(20, 3), (30, 5)]).unwrap();
        let two = *two.last().unwrap();
        assert_eq!(two.slots[slot_of_3].level, 3, "depth 3 kept its slot");
        let freed = one.slots.iter().position(|s| s.level == 1).unwrap();
        assert_eq!(two.slots[freed].level, LEVEL_UNUSED);
        assert_eq!(two.count, 3);
        // A later update reuses the freed slot instead of growing.
        let three = index_updates(&two, &[(20, 3), (30, 5), (40, 2)]).unwrap();
        assert_eq!(three.len(), 1);
        assert_eq!(three[0].slots[freed].level, 2);
    }

    #[test]
    fn too_many_depths_are_refused() {
        let policies: Vec<(u64, u32)> = (0..=MAX_POLICY_LEVELS as u32)
            .map(|level| (100 + u64::from(level), level))
            .collect();
        assert_eq!(
            index_updates(&PolicyIndex::default(), &policies),
            Err(PolicyError::TooManyLevels(MAX_POLICY_LEVELS + 1))
        );
    }

    #[test]
    fn the_filter_has_no_false_negatives() {
        let mut filter = LevelFilter::default();
        for id in 1..200 {
            filter.insert(id * 7);
        }
        assert!((1..200).all(|id| filter.may_hold(id * 7)));
    }
}
