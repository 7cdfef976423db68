//! The policy file of `enforcer apply -f`: YAML in, validated rules out (operation names
//! checked here, cgroups resolved by the caller).
use enforcer_common::{Action, Operation};

use super::{Arm, PolicyError, parse_ops};

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

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum CgroupSpec {
    Id(u64),
    Path(String),
}

/// One entry of a policy file: the cgroup as written, and its rules for [`super::compile`].
#[derive(Debug, PartialEq, Eq)]
pub struct FileRule {
    pub cgroup: String,
    pub rules: Vec<(Action, Vec<Operation>)>,
    /// The entry's `arm`, if given.
    pub arm: Option<Arm>,
}

/// Parses a policy file. Syntax errors and unknown keys name the line; duplicate cgroups (as
/// written) are refused. Unknown operation names are refused here.
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
        rules.push(FileRule {
            cgroup,
            rules: vec![
                (Action::Deny, names(&entry.deny)?),
                (Action::Audit, names(&entry.audit)?),
                (Action::Kill, names(&entry.kill)?),
            ],
            arm: entry.arm,
        });
    }
    Ok(rules)
}

/// A YAML list of operation names (each a name or `all`), as operations.
fn names(list: &[String]) -> Result<Vec<Operation>, PolicyError> {
    let mut ops = Vec::new();
    for name in list {
        ops.extend(parse_ops(name)?);
    }
    ops.sort();
    ops.dedup();
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, summary};

    #[test]
    fn parses_a_policy_file() {
        let text = "policies:\n  - cgroup: /pod1\n    deny: [mount, keyctl]\n    audit: [settime]\n  - cgroup: 42\n    kill: [settime]\n";
        let rules = parse_file("p.yaml", text).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].cgroup, "/pod1");
        assert_eq!(
            rules[0].rules[0],
            (Action::Deny, vec![Operation::Mount, Operation::Keyctl])
        );
        assert_eq!(rules[1].cgroup, "42");
        let policy = compile(&rules[0].rules, 1).unwrap();
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
        let mut policy = compile(&rules[0].rules, 1).unwrap();
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
}
