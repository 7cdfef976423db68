//! The enforcement matrix: every operation, through every path the kernel offers, under every
//! action, plus the same attempt from outside any policy. Each test reads what the kernel did:
//! the errno or signal, whether the mount/key/clock change happened, the events, the counters.
//!
//! One module per path, one test per mode, so the output names both:
//! `matrix::mount_new::deny ... ok`.
use crate::harness::{
    Cgroup, ClockGuard, Probe, Scratch, Tail, counters, enforcer_ok, key_line, make_key, probe,
    wall_seconds,
};

pub const EPERM: i64 = 1;
const ENOKEY: i64 = 126;
const EACCES: i64 = 13;
pub const EINVAL: i64 = 22;
/// 2035-01-01T00:00:00Z: far from the VM's date, so a moved clock is unmistakable.
pub const TARGET_TIME: i64 = 2_051_222_400;

/// Fixtures of one attempt: made before the policy is attached, checked after the attempt.
pub struct Fixture {
    pub scratch: Scratch,
    pub key: String,
    _clock: ClockGuard,
}

/// What the attempt would change, observed from outside the cgroup.
#[derive(Clone, Copy)]
pub enum Effect {
    /// A mount appears on `dst`.
    Mounted,
    /// The mount on `dst` disappears.
    Unmounted,
    /// The mount on `dst` becomes read-only.
    ReadOnly,
    /// The mount on `dst` stops being shared.
    NotShared,
    /// The clock jumps to [`TARGET_TIME`].
    ClockMoved,
    /// A key with the fixture's description exists.
    KeyExists,
    /// The fixture key's payload is now 12 bytes long.
    KeyUpdated,
    /// The fixture key's permissions changed to 3f3f0000.
    KeyPermChanged,
    /// Nothing visible from outside: the probe's own result is the evidence.
    ProbeOnly,
}

pub struct Case {
    pub op: &'static str,
    /// Makes the fixtures; returns the probe's arguments.
    pub prepare: fn(&Fixture) -> Vec<String>,
    pub effect: Effect,
    /// errno under `deny`: EPERM, except that the keys code reports a refused key lookup as
    /// ENOKEY and a refused change of a found key as EACCES.
    pub denied_errno: i64,
    /// errno when permitted, for calls that fail for other reasons (pivot_root in an initramfs).
    pub allowed_errno: i64,
}

impl Case {
    pub const fn new(
        op: &'static str,
        prepare: fn(&Fixture) -> Vec<String>,
        effect: Effect,
    ) -> Self {
        Self {
            op,
            prepare,
            effect,
            denied_errno: EPERM,
            allowed_errno: 0,
        }
    }
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn happened(effect: Effect, fixture: &Fixture, attempt: Option<&Probe>) -> bool {
    let scratch = &fixture.scratch;
    match effect {
        Effect::Mounted => scratch.is_mounted("dst"),
        Effect::Unmounted => !scratch.is_mounted("dst"),
        Effect::ReadOnly => scratch.is_read_only("dst"),
        Effect::NotShared => !scratch.is_shared("dst"),
        Effect::ClockMoved => wall_seconds() >= TARGET_TIME - 60,
        Effect::KeyExists => key_line(&fixture.key).is_some(),
        Effect::KeyUpdated => key_line(&fixture.key).is_some_and(|l| l.ends_with(": 12")),
        Effect::KeyPermChanged => key_line(&fixture.key).is_some_and(|l| l.contains(" 3f3f0000 ")),
        Effect::ProbeOnly => attempt.is_some_and(|p| p.report.is_some() && p.ret() >= 0),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Outside,
    Audit,
    Deny,
    Kill,
}

/// Runs one case in one mode and checks everything the kernel shows.
pub fn run(name: &str, case: &Case, mode: Mode) {
    let name = format!("{name}-{mode:?}").to_lowercase();
    let fixture = Fixture {
        scratch: Scratch::new(&name),
        key: format!("enf-{name}"),
        _clock: ClockGuard::new(),
    };
    let probe_args = (case.prepare)(&fixture);
    let probe_args: Vec<&str> = probe_args.iter().map(String::as_str).collect();

    if mode == Mode::Outside {
        // A policy elsewhere must not touch a process outside it.
        let elsewhere = Cgroup::new(&format!("elsewhere-{name}"));
        enforcer_ok(&["attach", "--cgroup", elsewhere.arg(), "--deny", "all"]);
        let attempt = probe(None, &probe_args);
        assert_permitted(case, &fixture, &attempt);
        return;
    }

    let cgroup = Cgroup::new(&name);
    let flag = match mode {
        Mode::Audit => "--audit",
        Mode::Deny => "--deny",
        _ => "--kill",
    };
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), flag, case.op]);
    let tail = Tail::start(&[]);

    let attempt = probe(Some(&cgroup), &probe_args);

    let pid = match mode {
        Mode::Kill => {
            assert_eq!(attempt.signal(), Some(libc::SIGKILL), "{attempt:?}");
            None
        }
        Mode::Deny => {
            assert_eq!(attempt.errno(), case.denied_errno, "{attempt:?}");
            Some(attempt.pid())
        }
        _ => {
            assert_permitted(case, &fixture, &attempt);
            Some(attempt.pid())
        }
    };
    if mode != Mode::Audit {
        assert!(
            !happened(case.effect, &fixture, Some(&attempt)),
            "refused, yet the operation happened"
        );
    }

    // Every decision is one event and one count; a refusal stops at the first.
    let action = match mode {
        Mode::Audit => "audit",
        Mode::Deny => "deny",
        _ => "kill",
    };
    let event = tail.wait_for(|e| {
        e["cgroup"]["id"] == cgroup.id() && pid.is_none_or(|pid| e["process"]["pid"] == pid)
    });
    assert_eq!(event["enforcer"]["operation"], case.op);
    assert_eq!(event["enforcer"]["action"], action);
    assert_eq!(event["process"]["name"], "probe");
    assert_eq!(event["enforcer"]["policy_cgroup_id"], cgroup.id());
    let events = tail.settled_events_of(event["process"]["pid"].as_u64().expect("pid"));
    let (audited, denied, killed) = counters(&cgroup, case.op);
    let counted = match mode {
        Mode::Audit => audited,
        Mode::Deny => denied,
        _ => killed,
    };
    // One attempt may pass several checks (the keys code retries a refused lookup), but each
    // is exactly one event and one count.
    assert_eq!(
        counted,
        events.len() as u64,
        "counter vs events: {events:?}"
    );
}

/// `kill` on the syscall layer alone: SIGKILL is queued at `sys_enter` and lands when the
/// call returns to user space, so the call itself runs. Measures, per path, whether its change
/// happened before the caller died (`KILL-SIDE-EFFECT <case> happened|prevented|unobservable`
/// on stdout, the README's table), and holds it to what was measured: a change made by the
/// first guarded call happens; for a sequence of calls only the first one runs.
pub fn kill_at_sys_enter(name: &str, case: &Case) {
    let name = format!("{name}-sys");
    let fixture = Fixture {
        scratch: Scratch::new(&name),
        key: format!("enf-{name}"),
        _clock: ClockGuard::new(),
    };
    let probe_args = (case.prepare)(&fixture);
    let probe_args: Vec<&str> = probe_args.iter().map(String::as_str).collect();
    let cgroup = Cgroup::new(&name);
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--kill",
        case.op,
    ]);
    let attempt = probe(Some(&cgroup), &probe_args);
    assert_eq!(attempt.signal(), Some(libc::SIGKILL), "{attempt:?}");
    let observed =
        (!matches!(case.effect, Effect::ProbeOnly)).then(|| happened(case.effect, &fixture, None));
    let case_name = name.trim_end_matches("-sys");
    println!(
        "KILL-SIDE-EFFECT {case_name} {}",
        match observed {
            Some(true) => "happened",
            Some(false) => "prevented",
            None => "unobservable",
        }
    );
    assert_eq!(
        observed,
        crate::syscall::kill_side_effect(case_name),
        "the README's kill table for {case_name} no longer holds"
    );
}

fn assert_permitted(case: &Case, fixture: &Fixture, attempt: &Probe) {
    assert_eq!(attempt.errno(), case.allowed_errno, "{attempt:?}");
    if case.allowed_errno == 0 {
        assert!(
            happened(case.effect, fixture, Some(attempt)),
            "permitted, but nothing happened"
        );
    }
}

macro_rules! matrix {
    ($($name:ident => $case:expr;)*) => {$(
        mod $name {
            use super::*;
            use $crate::matrix::{Mode, kill_at_sys_enter, run};
            const CASE: Case = $case;
            #[test] fn outside() { run(stringify!($name), &CASE, Mode::Outside) }
            #[test] fn audit() { run(stringify!($name), &CASE, Mode::Audit) }
            #[test] fn deny() { run(stringify!($name), &CASE, Mode::Deny) }
            #[test] fn kill() { run(stringify!($name), &CASE, Mode::Kill) }
            #[test] fn syscall_kill() { kill_at_sys_enter(stringify!($name), &CASE) }
        }
    )*};
}
// Families tested in a module of their own use the same rows.
pub(crate) use matrix;

const TARGET: &str = "2051222400";

matrix! {
    // settime
    settimeofday => Case::new("settime", |_| args(&["settimeofday", TARGET]), Effect::ClockMoved);
    clock_settime => Case::new("settime", |_| args(&["clock_settime", TARGET]), Effect::ClockMoved);
    adjtimex => Case::new("settime", |_| args(&["adjtimex-offset", TARGET]), Effect::ClockMoved);
    clock_adjtime => Case::new("settime", |_| args(&["clock_adjtime-offset", TARGET]), Effect::ClockMoved);

    // mount(2) and friends
    mount_new => Case::new("mount", |f| args(&["mount-tmpfs", &f.scratch.path("dst")]), Effect::Mounted);
    mount_bind => Case::new("mount", |f| args(&["mount-bind", &f.scratch.path("src"), &f.scratch.path("dst")]), Effect::Mounted);
    mount_move => Case::new("mount", |f| {
        f.scratch.mount_tmpfs("src");
        args(&["mount-move", &f.scratch.path("src"), &f.scratch.path("dst")])
    }, Effect::Mounted);
    remount => Case::new("mount", |f| {
        f.scratch.mount_tmpfs("dst");
        args(&["remount-ro", &f.scratch.path("dst")])
    }, Effect::ReadOnly);
    propagation => Case::new("mount", |f| {
        f.scratch.mount_tmpfs("dst");
        f.scratch.make_shared("dst");
        args(&["make-private", &f.scratch.path("dst")])
    }, Effect::NotShared);
    umount2 => Case::new("mount", |f| {
        f.scratch.mount_tmpfs("dst");
        args(&["umount", &f.scratch.path("dst")])
    }, Effect::Unmounted);
    fsmount_attach => Case::new("mount", |f| args(&["fsmount-attach", &f.scratch.path("dst")]), Effect::Mounted);
    fsmount_detached => Case::new("mount", |_| args(&["fsmount-detached"]), Effect::ProbeOnly);
    open_tree_clone => Case::new("mount", |f| args(&["open-tree-clone", &f.scratch.path("src"), &f.scratch.path("dst")]), Effect::Mounted);
    fspick => Case::new("mount", |f| {
        f.scratch.mount_tmpfs("dst");
        args(&["fspick-ro", &f.scratch.path("dst")])
    }, Effect::ReadOnly);
    mount_setattr => Case::new("mount", |f| {
        f.scratch.mount_tmpfs("dst");
        args(&["mount-setattr-ro", &f.scratch.path("dst")])
    }, Effect::ReadOnly);
    // The initramfs root cannot be pivoted (EINVAL), but the hook runs before that check.
    pivot_root => Case {
        allowed_errno: EINVAL,
        ..Case::new("mount", |f| {
            f.scratch.mount_tmpfs("dst");
            args(&["pivot-root", &f.scratch.path("dst"), &f.scratch.path("dst")])
        }, Effect::ProbeOnly)
    };

    // keys
    add_key => Case {
        denied_errno: ENOKEY,
        ..Case::new("keyctl", |f| args(&["add-key", &f.key, "payload"]), Effect::KeyExists)
    };
    request_key => Case {
        denied_errno: ENOKEY,
        ..Case::new("keyctl", |f| { make_key(&f.key, "payload"); args(&["request-key", &f.key]) }, Effect::ProbeOnly)
    };
    join_session_keyring => Case::new("keyctl", |f| args(&["join-session", &f.key]), Effect::ProbeOnly);
    keyctl_read => Case {
        denied_errno: ENOKEY,
        ..Case::new("keyctl", |f| args(&["keyctl-read", &make_key(&f.key, "payload").to_string()]), Effect::ProbeOnly)
    };
    keyctl_update => Case {
        denied_errno: EACCES,
        ..Case::new("keyctl", |f| args(&["keyctl-update", &make_key(&f.key, "payload").to_string(), "twelve bytes"]), Effect::KeyUpdated)
    };
    keyctl_link => Case {
        denied_errno: ENOKEY,
        ..Case::new("keyctl", |f| args(&["keyctl-link", &make_key(&f.key, "payload").to_string()]), Effect::ProbeOnly)
    };
    keyctl_search => Case {
        denied_errno: ENOKEY,
        ..Case::new("keyctl", |f| { make_key(&f.key, "payload"); args(&["keyctl-search", &f.key]) }, Effect::ProbeOnly)
    };
    keyctl_setperm => Case {
        denied_errno: EACCES,
        ..Case::new("keyctl", |f| args(&["keyctl-setperm", &make_key(&f.key, "payload").to_string()]), Effect::KeyPermChanged)
    };
    keyctl_describe => Case::new("keyctl", |f| args(&["keyctl-describe", &make_key(&f.key, "payload").to_string()]), Effect::ProbeOnly);
}
