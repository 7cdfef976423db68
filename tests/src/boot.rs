//! The boot families, `reboot` and `kexec`: each call through the matrix (outside, audit, deny,
//! kill, kill at the syscall layer), their 32-bit numbers, both layers judging every call alike,
//! and a reboot from a child PID namespace. Every call is harmless: reboot with wrong magic
//! numbers and the kexec calls with an undefined flag fail with EINVAL right after the kernel's
//! CAP_SYS_BOOT check, or with EPERM when refused there. `outside` expecting EINVAL also shows
//! that the kernel has the call: ENOSYS would mean no capability check to guard.
use serde_json::Value;

use crate::{
    harness::{Cgroup, Tail, counters, enforcer_ok, probe},
    matrix::{Case, EINVAL, EPERM, Effect, Fixture, args, matrix},
};

/// reboot(0, 0, 0, NULL): wrong magic numbers. Never pass the real ones in a test.
const REBOOT: &[&str] = &["raw", "169", "0", "0", "0", "0"];
/// A KEXEC_* flag no kernel defines (in the low 16 bits; the high ones name an architecture).
const UNDEFINED_FLAG: &str = "32768";
const KEXEC_LOAD: &[&str] = &["raw", "246", "0", "0", "0", UNDEFINED_FLAG];
const KEXEC_FILE_LOAD: &[&str] = &["raw", "320", "-1", "-1", "0", "0", UNDEFINED_FLAG];
/// The same through the 32-bit entry: reboot is ia32 88, kexec_load 283; kexec_file_load has
/// no 32-bit number.
const REBOOT_32: &[&str] = &["raw32", "88", "0", "0", "0", "0"];
const KEXEC_LOAD_32: &[&str] = &["raw32", "283", "0", "0", "0", UNDEFINED_FLAG];
/// (probe arguments, operation, call name, 32-bit) of every boot call.
const CALLS: [(&[&str], &str, &str, bool); 5] = [
    (REBOOT, "reboot", "reboot", false),
    (KEXEC_LOAD, "kexec", "kexec_load", false),
    (KEXEC_FILE_LOAD, "kexec", "kexec_file_load", false),
    (REBOOT_32, "reboot", "reboot", true),
    (KEXEC_LOAD_32, "kexec", "kexec_load", true),
];
const CAP_SYS_BOOT: i64 = 22;

/// A boot call: EINVAL when permitted, nothing to see from outside.
const fn boot_case(op: &'static str, prepare: fn(&Fixture) -> Vec<String>) -> Case {
    Case {
        allowed_errno: EINVAL,
        ..Case::new(op, prepare, Effect::ProbeOnly)
    }
}

matrix! {
    reboot => boot_case("reboot", |_| args(REBOOT));
    kexec_load => boot_case("kexec", |_| args(KEXEC_LOAD));
    kexec_file_load => boot_case("kexec", |_| args(KEXEC_FILE_LOAD));
}

fn of_source<'a>(events: &'a [Value], source: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["enforcer"]["source"] == source)
        .collect()
}

/// With both layers on, each call is one LSM decision at `capable` and one syscall-layer report
/// of what the caller saw, naming the same operation, call and action; counted once.
#[test]
fn both_layers_judge_every_boot_call_alike_by_64_and_32_bit_numbers() {
    for (flag, action, errno) in [("--audit", "audit", EINVAL), ("--deny", "deny", EPERM)] {
        let cgroup = Cgroup::new(&format!("boot-layers-{action}"));
        enforcer_ok(&[
            "attach",
            "--cgroup",
            cgroup.arg(),
            "--layer",
            "both",
            flag,
            "reboot,kexec",
        ]);
        let tail = Tail::start(&[]);
        for (call, op, name, compat) in CALLS {
            let what = format!("{action} {name} (32-bit: {compat})");
            let attempt = probe(Some(&cgroup), call);
            assert_eq!(attempt.errno(), errno, "{what}: {attempt:?}");
            let events = tail.settled_events_of(attempt.pid());
            let (lsm, syscall) = (of_source(&events, "lsm"), of_source(&events, "syscall"));
            assert_eq!((lsm.len(), syscall.len()), (1, 1), "{what}: {events:?}");
            for event in [lsm[0], syscall[0]] {
                let enforcer = &event["enforcer"];
                assert_eq!(enforcer["operation"], op, "{what}: {event}");
                assert_eq!(enforcer["action"], action, "{what}: {event}");
                assert_eq!(enforcer["syscall"]["name"], name, "{what}: {event}");
                assert_eq!(enforcer["syscall"]["compat"], compat, "{what}: {event}");
            }
            assert_eq!(lsm[0]["enforcer"]["hook"], "capable", "{what}");
            assert_eq!(lsm[0]["enforcer"]["hook_arg"], CAP_SYS_BOOT, "{what}");
            let exit = &syscall[0]["enforcer"];
            assert_eq!(exit["errno"], errno, "{what}: {exit}");
            if action == "deny" {
                assert_eq!(exit["refused_by"], "enforcer", "{what}: {exit}");
            }
        }
        let expected = |n| match action {
            "audit" => (n, 0, 0),
            _ => (0, n, 0),
        };
        assert_eq!(counters(&cgroup, "reboot"), expected(2), "{action}");
        assert_eq!(counters(&cgroup, "kexec"), expected(3), "{action}");
    }
}

/// In a child PID namespace reboot checks CAP_SYS_BOOT in the namespace's owner and, with valid
/// magic, would kill the namespace's init: still a reboot to a policy, judged and reported.
#[test]
fn a_reboot_from_a_child_pid_namespace_is_judged_and_reported() {
    const CALL: &[&str] = &["reboot-in-pid-namespace"];
    let outside = probe(None, CALL);
    assert_eq!(outside.errno(), EINVAL, "{outside:?}");
    for (flag, action, errno) in [("--audit", "audit", EINVAL), ("--deny", "deny", EPERM)] {
        let cgroup = Cgroup::new(&format!("boot-pidns-{action}"));
        enforcer_ok(&["attach", "--cgroup", cgroup.arg(), flag, "reboot"]);
        let tail = Tail::start(&[]);
        let attempt = probe(Some(&cgroup), CALL);
        assert_eq!(attempt.errno(), errno, "{action}: {attempt:?}");
        // The caller is the probe's grandchild: found by its cgroup.
        let event = tail.wait_for(|e| e["cgroup"]["id"] == cgroup.id());
        let enforcer = &event["enforcer"];
        assert_eq!(enforcer["operation"], "reboot", "{event}");
        assert_eq!(enforcer["action"], action, "{event}");
        assert_eq!(enforcer["hook"], "capable", "{event}");
        assert_eq!(enforcer["syscall"]["name"], "reboot", "{event}");
        assert_ne!(event["process"]["pid"], attempt.pid(), "{event}");
        let expected = match action {
            "audit" => (1, 0, 0),
            _ => (0, 1, 0),
        };
        assert_eq!(counters(&cgroup, "reboot"), expected, "{action}");
    }
}
