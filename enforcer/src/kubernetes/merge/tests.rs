//! Every merge rule: strictest action per operation, who decides, arming, layer, and the report.
use enforcer_common::{Action, Operation};

use super::*;

fn wants(name: &str, actions: &[(Operation, Action)], arm: Arm, layer: Layer) -> Selecting {
    Selecting {
        name: name.to_owned(),
        actions: actions.to_vec(),
        arm,
        layer,
    }
}

fn exec(name: &str, actions: &[(Operation, Action)]) -> Selecting {
    wants(name, actions, Arm::Exec, Layer::Lsm)
}

fn merged(selecting: &[Selecting]) -> Merged {
    merge(selecting, 3).unwrap().expect("something to enforce")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn the_strictest_action_wins_per_operation() {
    let result = merged(&[
        exec(
            "ns/a",
            &[
                (Operation::Mount, Action::Audit),
                (Operation::Settime, Action::Deny),
            ],
        ),
        exec(
            "ns/b",
            &[
                (Operation::Mount, Action::Kill),
                (Operation::Settime, Action::Audit),
                (Operation::Keyctl, Action::Deny),
            ],
        ),
    ]);
    assert_eq!(result.policy.action(Operation::Mount), Action::Kill);
    assert_eq!(result.policy.action(Operation::Settime), Action::Deny);
    assert_eq!(result.policy.action(Operation::Keyctl), Action::Deny);
    assert_eq!(result.policy.level, 3);
    assert_eq!(result.policies_for(Operation::Mount), names(&["ns/b"]));
    assert_eq!(result.policies_for(Operation::Settime), names(&["ns/a"]));
    assert_eq!(
        policy::summary(&result.policy),
        "deny=keyctl,settime kill=mount arm=exec"
    );
    assert_eq!(result.contributors, names(&["ns/a", "ns/b"]));
    assert!(result.overridden.is_empty());
}

#[test]
fn every_step_of_the_order_is_kept() {
    // kill > deny > audit > allow, pairwise.
    let order = [Action::Allow, Action::Audit, Action::Deny, Action::Kill];
    for (i, &weaker) in order.iter().enumerate() {
        for &stronger in &order[i + 1..] {
            let result = merged(&[
                exec("weak", &[(Operation::Mount, weaker)]),
                exec("strong", &[(Operation::Mount, stronger)]),
            ]);
            assert_eq!(result.policy.action(Operation::Mount), stronger);
            assert_eq!(result.policies_for(Operation::Mount), names(&["strong"]));
        }
    }
}

#[test]
fn a_tie_names_every_policy_asking_it() {
    let result = merged(&[
        exec("b", &[(Operation::Mount, Action::Deny)]),
        exec("a", &[(Operation::Mount, Action::Deny)]),
    ]);
    assert_eq!(result.decisions.len(), 1);
    assert_eq!(result.decisions[0].policies, names(&["a", "b"]));
}

#[test]
fn nothing_to_enforce_needs_no_record() {
    assert_eq!(merge(&[], 1), Ok(None));
    let allow_only = exec("a", &[(Operation::Mount, Action::Allow)]);
    assert_eq!(merge(&[allow_only, exec("b", &[])], 1), Ok(None));
}

#[test]
fn input_order_does_not_matter() {
    let a = wants(
        "a",
        &[(Operation::Mount, Action::Deny)],
        Arm::Immediate,
        Layer::Syscall,
    );
    let b = exec("b", &[(Operation::Settime, Action::Audit)]);
    let c = exec("c", &[(Operation::Mount, Action::Audit)]);
    let first = merged(&[a.clone(), b.clone(), c.clone()]);
    for order in [[c.clone(), b.clone(), a.clone()], [b, a, c]] {
        assert_eq!(merged(&order), first);
    }
}

#[test]
fn immediate_arming_only_when_every_deciding_policy_asks_it() {
    let mount = [(Operation::Mount, Action::Deny)];
    let settime = [(Operation::Settime, Action::Deny)];

    let all = merged(&[
        wants("a", &mount, Arm::Immediate, Layer::Lsm),
        wants("b", &settime, Arm::Immediate, Layer::Lsm),
    ]);
    assert_eq!(
        (all.arm, Arm::of(&all.policy)),
        (Arm::Immediate, Arm::Immediate)
    );
    assert!(all.arm_lowered.is_empty());

    let mixed = merged(&[
        wants("a", &mount, Arm::Immediate, Layer::Lsm),
        wants("b", &settime, Arm::Exec, Layer::Lsm),
    ]);
    assert_eq!((mixed.arm, Arm::of(&mixed.policy)), (Arm::Exec, Arm::Exec));
    assert_eq!(mixed.arm_lowered, names(&["a"]));

    let none = merged(&[exec("a", &mount), exec("b", &settime)]);
    assert_eq!(Arm::of(&none.policy), Arm::Exec);
    assert!(none.arm_lowered.is_empty());
}

#[test]
fn an_overridden_policy_has_no_say_in_arming_or_layer() {
    // `b` only audits what `a` denies: the record holds nothing of `b`'s.
    let result = merged(&[
        wants(
            "a",
            &[(Operation::Mount, Action::Deny)],
            Arm::Immediate,
            Layer::Lsm,
        ),
        wants(
            "b",
            &[(Operation::Mount, Action::Audit)],
            Arm::Exec,
            Layer::Syscall,
        ),
    ]);
    assert_eq!(result.arm, Arm::Immediate);
    assert_eq!(result.layer, Layer::Lsm);
    assert_eq!(result.contributors, names(&["a"]));
    assert_eq!(result.overridden, names(&["b"]));
    assert!(result.arm_lowered.is_empty());

    // A policy that allows everything is overridden too.
    let result = merged(&[
        exec("a", &[(Operation::Mount, Action::Deny)]),
        exec("open", &[(Operation::Settime, Action::Allow)]),
    ]);
    assert_eq!(result.overridden, names(&["open"]));
}

#[test]
fn the_layer_is_the_union_of_the_deciding_policies_layers() {
    let layered = |first: Layer, second: Layer| {
        merged(&[
            wants("a", &[(Operation::Mount, Action::Deny)], Arm::Exec, first),
            wants(
                "b",
                &[(Operation::Settime, Action::Audit)],
                Arm::Exec,
                second,
            ),
        ])
    };
    for (first, second, expected) in [
        (Layer::Lsm, Layer::Lsm, Layer::Lsm),
        (Layer::Syscall, Layer::Syscall, Layer::Syscall),
        (Layer::Both, Layer::Both, Layer::Both),
        (Layer::Lsm, Layer::Syscall, Layer::Both),
        (Layer::Syscall, Layer::Lsm, Layer::Both),
        (Layer::Both, Layer::Lsm, Layer::Both),
        (Layer::Syscall, Layer::Both, Layer::Both),
    ] {
        let result = layered(first, second);
        assert_eq!(result.layer, expected, "{first:?} + {second:?}");
        assert_eq!(
            Layer::of(&result.policy),
            expected,
            "{first:?} + {second:?}"
        );
    }
}

#[test]
fn one_policy_listing_an_operation_twice_takes_the_stricter() {
    let result = merged(&[exec(
        "a",
        &[
            (Operation::Keyctl, Action::Kill),
            (Operation::Keyctl, Action::Audit),
        ],
    )]);
    assert_eq!(result.policy.action(Operation::Keyctl), Action::Kill);
    assert_eq!(result.policies_for(Operation::Keyctl), names(&["a"]));
    assert!(result.policies_for(Operation::Mount).is_empty());
}
