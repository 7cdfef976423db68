//! The workload as an attacker: the ways around the policy and into the enforcer that a covered
//! process with CAP_SYS_ADMIN, CAP_SYS_PTRACE or CAP_BPF has, each refused (and reported) by
//! the kernel; and the calls that change nothing a policy guards, each let through (false
//! positives break legitimate work). The runtime-image attacks (an entrypoint named like a
//! memfd, the runtime's own binary with the image's loader) are in `runtimes`.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::{
    harness::{
        CGROUP_ROOT, Cgroup, Scratch, Tail, counters, enforcer_ok, make_key, probe, probe_bin,
        suppressed as suppressed_counter,
    },
    matrix::EPERM,
};

const EACCES: i64 = 13;
const PINS: &str = "/sys/fs/bpf/enforcer/v1";

/// The tamper events of a process.
fn tamper_events(tail: &Tail, pid: u64) -> Vec<Value> {
    tail.settled_events_of(pid)
        .into_iter()
        .filter(|e| e["enforcer"]["kind"] == "tamper")
        .collect()
}

/// The policy of `cgroup` still refuses a mount (its maps and `sb_mount`'s link are intact).
fn assert_mount_refused(cgroup: &Cgroup, scratch: &str) {
    let scratch = Scratch::new(scratch);
    let args = [
        "--unshare-mount",
        "yes",
        "mount-tmpfs",
        &scratch.path("dst"),
    ];
    let mounted = probe(Some(cgroup), &args);
    assert_eq!(
        mounted.errno(),
        EPERM,
        "the policy no longer holds: {mounted:?}"
    );
}

fn deny(cgroup: &Cgroup, ops: &str, arm: &str) {
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--deny",
        ops,
        "--arm",
        arm,
    ]);
}

// ---------------------------------------------------------------------------------------------
// Tampering with the enforcer's BPF objects.

/// By id: walking every map, program and link id and asking for a descriptor gets none of the
/// enforcer's, so its own policy cannot be deleted; outside every policy the same walk works.
#[test]
fn a_covered_process_gets_no_descriptor_for_the_enforcers_objects() {
    let cgroup = Cgroup::new("sec-tamper-ids");
    deny(&cgroup, "mount", "immediate");
    let tail = Tail::start(&[]);
    let attack = probe(Some(&cgroup), &["tamper-ids"]);
    let report = attack.report.clone().expect("report");
    assert_eq!(
        report["policy_deleted"], -1,
        "the policy map was opened: {report}"
    );
    for kind in ["map", "prog", "link"] {
        assert!(
            report[format!("{kind}_refused")].as_u64() > Some(0),
            "no {kind} of the enforcer was refused: {report}"
        );
    }
    assert_mount_refused(&cgroup, "sec-tamper-ids");
    let events = tamper_events(&tail, attack.pid());
    assert!(
        events.iter().any(|e| e["enforcer"]["hook"] == "bpf_map")
            && events.iter().any(|e| e["enforcer"]["hook"] == "bpf_prog")
            && events.iter().any(|e| e["enforcer"]["hook"] == "bpf"),
        "tamper events: {events:?}"
    );
    assert!(events.iter().all(|e| e["event"]["outcome"] == "failure"));
    // Outside every policy nothing is refused (the operator is trusted).
    let outside = probe(None, &["tamper-ids"]).report.expect("report");
    assert_eq!(outside["map_refused"], 0, "{outside}");
    assert!(outside["map_obtained"].as_u64() > Some(0), "{outside}");
}

/// By pin: a covered process that sees the host's bpffs cannot open a pinned map, detach a
/// pinned link, or unpin or rename a pin (which would release the link).
#[test]
fn a_covered_process_cannot_use_or_remove_the_pins() {
    let cgroup = Cgroup::new("sec-tamper-pins");
    deny(&cgroup, "mount", "immediate");
    let tail = Tail::start(&[]);
    let map = format!("{PINS}/maps/POLICIES");
    let link = format!("{PINS}/links/sb_mount");
    let got = probe(Some(&cgroup), &["bpf-obj-get", &map]);
    assert_eq!(got.errno(), EPERM, "{got:?}");
    let detached = probe(Some(&cgroup), &["bpf-link-detach-pin", &link]);
    assert_eq!(detached.errno(), EPERM, "{detached:?}");
    let unpinned = probe(Some(&cgroup), &["unlink", &link]);
    assert_eq!(unpinned.errno(), EPERM, "{unpinned:?}");
    let renamed = probe(
        Some(&cgroup),
        &["rename", &link, &format!("{PINS}/links/moved")],
    );
    assert_eq!(renamed.errno(), EPERM, "{renamed:?}");
    assert!(Path::new(&link).exists(), "the pin is gone");
    for attempt in [&got, &detached, &unpinned, &renamed] {
        assert_eq!(tamper_events(&tail, attempt.pid()).len(), 1, "{attempt:?}");
    }
    assert_mount_refused(&cgroup, "sec-tamper-pins");
}

/// A covered process cannot load a BPF LSM program (one would run beside the enforcer's and
/// could override its verdicts); outside every policy the kernel judges the (invalid) program.
#[test]
fn a_covered_process_cannot_load_an_lsm_program() {
    let cgroup = Cgroup::new("sec-tamper-load");
    deny(&cgroup, "settime", "immediate");
    let tail = Tail::start(&[]);
    let load = probe(Some(&cgroup), &["bpf-load-lsm"]);
    assert_eq!(load.errno(), EPERM, "{load:?}");
    let events = tamper_events(&tail, load.pid());
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]["enforcer"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("BPF_PROG_LOAD")),
        "{events:?}"
    );
    let outside = probe(None, &["bpf-load-lsm"]);
    assert_ne!(outside.errno(), EPERM, "{outside:?}");
    assert_ne!(outside.errno(), 0, "{outside:?}");
}

/// The shipped BPF object has no switch that silences events: setting the bench build's
/// "no events" bit in CONFIG (which a process with the map could do) changes nothing.
#[test]
fn the_shipped_object_has_no_switch_that_silences_events() {
    let cgroup = Cgroup::new("sec-no-switch");
    deny(&cgroup, "settime", "immediate");
    enforcer_ok(&["bench-events", "none"]);
    let tail = Tail::start(&[]);
    let refused = probe(Some(&cgroup), &["raw", "164", "0", "0"]);
    let events = tail.settled_events_of(refused.pid());
    enforcer_ok(&["bench-events", "normal"]);
    assert_eq!(refused.errno(), EPERM);
    assert_eq!(events.len(), 1, "the event was silenced: {events:?}");
}

// ---------------------------------------------------------------------------------------------
// Injection into a runtime's setup process.

/// A process waiting on stdin, made a setup process the way runc makes `runc init` one: moved
/// into the covered cgroup by a process outside every policy (this test).
struct SetupProcess {
    child: Child,
}

impl SetupProcess {
    fn start(cgroup: &Cgroup) -> Self {
        let mut child = Command::new(probe_bin())
            .args(["--wait", "adjtimex-modes", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the setup process");
        fs::write(cgroup.path.join("cgroup.procs"), child.id().to_string())
            .expect("move it into the cgroup");
        // Let the kernel's programs record it.
        thread::sleep(Duration::from_millis(100));
        let _ = child.stdin.as_mut().map(|_| ());
        Self { child }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for SetupProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_subject_cannot_trace_or_write_a_setup_process() {
    let cgroup = Cgroup::new("sec-inject");
    deny(&cgroup, "mount", "exec");
    let setup = SetupProcess::start(&cgroup);
    let tail = Tail::start(&[]);
    let traced = probe(Some(&cgroup), &["ptrace-attach", &setup.pid()]);
    assert_eq!(traced.errno(), EPERM, "ptrace: {traced:?}");
    let written = probe(Some(&cgroup), &["vm-write", &setup.pid()]);
    assert_eq!(written.errno(), EPERM, "process_vm_writev: {written:?}");
    let mem = probe(Some(&cgroup), &["proc-mem-write", &setup.pid()]);
    assert_eq!(mem.errno(), EACCES, "/proc/PID/mem: {mem:?}");
    // Its root is the host's: no way through /proc/PID/root either.
    let root = probe(Some(&cgroup), &["proc-root", &setup.pid()]);
    assert_eq!(root.errno(), EACCES, "/proc/PID/root: {root:?}");
    for attempt in [&traced, &written, &mem, &root] {
        let events = tamper_events(&tail, attempt.pid());
        assert_eq!(events.len(), 1, "{attempt:?}: {events:?}");
        assert_eq!(events[0]["enforcer"]["hook"], "ptrace_access_check");
    }
    // What `ps` reads is shown as usual (the kernel only masks some fields), and not reported.
    let stat = probe(Some(&cgroup), &["proc-stat", &setup.pid()]);
    assert_eq!(stat.errno(), 0, "{stat:?}");
    assert!(tail.settled_events_of(stat.pid()).is_empty());
    // Tracing another subject process is the workload's own business.
    let mut peer = Command::new(probe_bin())
        .args(["--cgroup", cgroup.arg(), "--wait", "adjtimex-modes", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a peer");
    thread::sleep(Duration::from_millis(200));
    let peer_traced = probe(Some(&cgroup), &["ptrace-attach", &peer.id().to_string()]);
    let _ = peer.kill();
    let _ = peer.wait();
    assert_eq!(peer_traced.errno(), 0, "{peer_traced:?}");
}

// ---------------------------------------------------------------------------------------------
// Arming's coverage at any depth.

/// Removes a chain `d0/d1/...` below `base`, deepest first.
fn remove_chain(base: &Path, depth: usize) {
    let mut dirs = Vec::new();
    let mut dir = base.to_path_buf();
    for i in 0..depth {
        dir = dir.join(format!("d{i}"));
        dirs.push(dir.clone());
    }
    for dir in dirs.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

fn deep_attack(name: &str, op: &str) {
    const DEPTH: usize = 40;
    let cgroup = Cgroup::new(name);
    deny(&cgroup, "mount", "exec");
    let scratch = Scratch::new(name);
    let tail = Tail::start(&[]);
    let attack = probe(
        Some(&cgroup),
        &[op, cgroup.arg(), &DEPTH.to_string(), &scratch.path("dst")],
    );
    let report = attack.report.clone().expect("report");
    remove_chain(&cgroup.path, DEPTH);
    assert!(report.get("setup_error").is_none(), "{report}");
    assert_eq!(report["errno"], EPERM, "the moved child mounted: {report}");
    assert!(!scratch.is_mounted("dst"), "the mount is there");
    let child = report["pid"].as_u64().expect("pid");
    let events = tail.settled_events_of(child);
    assert!(
        events.iter().any(|e| e["enforcer"]["operation"] == "mount"),
        "{events:?}"
    );
    assert_eq!(counters(&cgroup, "mount").1, 1);
}

#[test]
fn a_child_moved_up_from_a_deep_cgroup_is_subject() {
    deep_attack("sec-deep-move", "deep-move");
}

#[test]
fn a_child_cloned_into_the_cgroup_from_a_deep_cgroup_is_subject() {
    deep_attack("sec-deep-clone", "deep-clone-into");
}

// ---------------------------------------------------------------------------------------------
// Unmounting by removing a mount point of another mount namespace.

/// A process outside every policy holding a tmpfs on `dir` in a mount namespace of its own.
struct HeldMount {
    child: Child,
    dir: String,
}

impl HeldMount {
    fn start(dir: &str) -> Self {
        let mut child = Command::new(probe_bin())
            .args(["--unshare-mount", "yes", "hold-mount", dir])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mount holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("holder report");
        assert!(line.contains("\"ret\":0"), "holder: {line}");
        Self {
            child,
            dir: dir.to_owned(),
        }
    }

    fn holds(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.child.id()))
            .unwrap_or_default()
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(self.dir.as_str()))
    }
}

impl Drop for HeldMount {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn removing_a_mount_point_of_another_namespace_is_a_mount_operation() {
    let cgroup = Cgroup::new("sec-rmdir");
    deny(&cgroup, "mount", "immediate");
    let scratch = Scratch::new("sec-rmdir");
    let tail = Tail::start(&[]);
    // `src` is empty here; the holder's tmpfs on it lives in the holder's namespace only.
    let held = HeldMount::start(&scratch.path("src"));
    let removed = probe(Some(&cgroup), &["rmdir", &scratch.path("src")]);
    assert_eq!(removed.errno(), EPERM, "{removed:?}");
    assert!(held.holds(), "the other namespace's mount was detached");
    // Renaming another empty directory over it would detach it too.
    fs::create_dir(scratch.dir.join("spare")).expect("mkdir spare");
    let renamed = probe(
        Some(&cgroup),
        &["rename", &scratch.path("spare"), &scratch.path("src")],
    );
    assert_eq!(renamed.errno(), EPERM, "{renamed:?}");
    assert!(held.holds(), "the other namespace's mount was detached");
    for attempt in [&removed, &renamed] {
        let events = tail.settled_events_of(attempt.pid());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["enforcer"]["operation"], "mount");
    }
    assert_eq!(counters(&cgroup, "mount").1, 2);
    // A directory that is no mount point is removed as usual.
    let plain = probe(Some(&cgroup), &["rmdir", &scratch.path("dst/old")]);
    assert_eq!(plain.errno(), 0, "{plain:?}");
}

/// `open_tree_attr` (467, kernel 6.15) is a mount call: the syscall layer reports it by name
/// (these kernels refuse it with ENOSYS; the LSM layer guards it at its CAP_SYS_ADMIN check).
#[test]
fn open_tree_attr_is_a_mount_call() {
    let cgroup = Cgroup::new("sec-open-tree-attr");
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--audit",
        "mount",
    ]);
    let tail = Tail::start(&[]);
    let call = probe(Some(&cgroup), &["raw", "467", "-1", "0", "0", "0", "0"]);
    assert_ne!(call.errno(), 0, "{call:?}");
    let events = tail.settled_events_of(call.pid());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["enforcer"]["syscall"]["name"], "open_tree_attr");
    assert_eq!(events[0]["enforcer"]["operation"], "mount");
}

// ---------------------------------------------------------------------------------------------
// Calls that change nothing a policy guards.

#[test]
fn time_namespace_offsets_are_not_a_clock_change() {
    let cgroup = Cgroup::new("sec-timens");
    deny(&cgroup, "settime", "immediate");
    let tail = Tail::start(&[]);
    let offsets = probe(Some(&cgroup), &["timens-offsets"]);
    assert_eq!(offsets.errno(), 0, "{offsets:?}");
    assert!(tail.settled_events_of(offsets.pid()).is_empty());
    // A real clock change is still refused.
    let set = probe(Some(&cgroup), &["raw", "164", "0", "0"]);
    assert_eq!(set.errno(), EPERM, "{set:?}");
}

#[test]
fn the_kernels_own_key_lookups_in_a_covered_process_are_not_its_key_calls() {
    let cgroup = Cgroup::new("sec-keys-fp");
    make_key("sec-keys-fp", "payload");
    deny(&cgroup, "keyctl", "immediate");
    let tail = Tail::start(&[]);
    // Reading /proc/keys makes the kernel check the reader's permission on every key.
    let listed = probe(Some(&cgroup), &["proc-keys-shows", "sec-keys-fp"]);
    assert_eq!(listed.ret(), 1, "the key was hidden: {listed:?}");
    assert!(tail.settled_events_of(listed.pid()).is_empty());
    // The process's own key call is still refused.
    let own = probe(Some(&cgroup), &["add-key", "sec-keys-fp-2", "x"]);
    assert_ne!(own.errno(), 0, "{own:?}");
    assert_eq!(tail.settled_events_of(own.pid()).len(), 1);
}

/// Clock reads at the syscall layer: `kill settime` must not kill a reader.
#[test]
fn the_syscall_layer_does_not_judge_clock_reads() {
    let cgroup = Cgroup::new("sec-clock-reads");
    enforcer_ok(&[
        "attach",
        "--cgroup",
        cgroup.arg(),
        "--layer",
        "syscall",
        "--kill",
        "settime",
    ]);
    let tail = Tail::start(&[]);
    for args in [
        &["adjtimex-modes", "0"][..],
        &["adjtimex-modes", "40961"][..], // ADJ_OFFSET_SS_READ
        &["clock_adjtime-modes", "0"][..],
        &["raw", "227", "1", "0"][..], // clock_settime(CLOCK_MONOTONIC): EINVAL
    ] {
        let read = probe(Some(&cgroup), args);
        assert_eq!(read.signal(), None, "{args:?} was killed");
        assert!(tail.settled_events_of(read.pid()).is_empty(), "{args:?}");
    }
    // A change is killed.
    let set = probe(Some(&cgroup), &["raw", "164", "0", "0"]);
    assert_eq!(set.signal(), Some(libc::SIGKILL));
    assert_eq!(counters(&cgroup, "settime").2, 1);
}

/// The same calls through both layers, audited: each layer reports exactly the same ones.
#[test]
fn both_layers_judge_every_call_the_same_way() {
    let scratch = Scratch::new("sec-layers");
    make_key("sec-layers-key", "x");
    let calls: [(&str, &[&str]); 10] = [
        ("settimeofday NULL", &["raw", "164", "0", "0"]),
        ("adjtimex read", &["adjtimex-modes", "0"]),
        ("adjtimex ss-read", &["adjtimex-modes", "40961"]),
        ("clock_adjtime read", &["clock_adjtime-modes", "0"]),
        ("clock_settime monotonic", &["raw", "227", "1", "0"]),
        ("adjtimex bad tick", &["raw", "159", "buf:16384"]),
        ("timens offsets", &["timens-offsets"]),
        ("proc keys", &["proc-keys-shows", "sec-layers-key"]),
        ("add_key", &["add-key", "sec-layers-2", "x"]),
        (
            "mount",
            &[
                "--unshare-mount",
                "yes",
                "mount-tmpfs",
                "/tmp/sec-layers/dst",
            ],
        ),
    ];
    let mut seen: Vec<Vec<bool>> = Vec::new();
    for layer in ["lsm", "syscall"] {
        let cgroup = Cgroup::new(&format!("sec-layers-{layer}"));
        enforcer_ok(&[
            "attach",
            "--cgroup",
            cgroup.arg(),
            "--layer",
            layer,
            "--audit",
            "all",
        ]);
        let tail = Tail::start(&[]);
        let mut row = Vec::new();
        for (_, args) in calls {
            let run = probe(Some(&cgroup), args);
            row.push(!tail.settled_events_of(run.pid()).is_empty());
        }
        seen.push(row);
    }
    drop(scratch);
    let table: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("{name}: lsm={} syscall={}", seen[0][i], seen[1][i]))
        .collect();
    assert_eq!(seen[0], seen[1], "{table:#?}");
    // And the judgment is the kernel's: a change is reported, a read is not.
    assert_eq!(
        seen[0],
        [
            true, false, false, false, false, true, false, false, true, true
        ],
        "{table:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// One tenant's flood and another's evidence.

#[test]
fn a_flood_from_one_tenant_does_not_hide_anothers_events() {
    let noisy = Cgroup::new("sec-flood-a");
    let quiet = Cgroup::new("sec-flood-b");
    for cgroup in [&noisy, &quiet] {
        enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--audit", "settime"]);
    }
    let tail = Tail::start(&[]);
    let stop = "/tmp/sec-flood-stop";
    let _ = fs::remove_file(stop);
    let flooders: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(probe_bin())
                .args(["--cgroup", noisy.arg(), "settime-until", stop])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a flooder")
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let mut quiet_pids = Vec::new();
    for _ in 0..20 {
        quiet_pids.push(probe(Some(&quiet), &["raw", "164", "0", "0"]).pid());
        thread::sleep(Duration::from_millis(50));
    }
    fs::write(stop, "").expect("stop the flood");
    let mut flood_calls = 0;
    for flooder in flooders {
        let out = flooder.wait_with_output().expect("flooder");
        let report: Value = serde_json::from_slice(&out.stdout).expect("flooder report");
        flood_calls += report["calls"].as_u64().unwrap_or(0);
    }
    // One more call per tenant, after the flood: its summary of what was suppressed comes with it.
    let after = probe(Some(&noisy), &["raw", "164", "0", "0"]);
    thread::sleep(Duration::from_millis(1000));
    let events = tail.events();
    let missing: Vec<u64> = quiet_pids
        .iter()
        .copied()
        .filter(|pid| {
            !events
                .iter()
                .any(|e| e["process"]["pid"].as_u64() == Some(*pid))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the quiet tenant's events of {missing:?} were lost"
    );
    let noisy_id = noisy.id();
    let of_noisy = |kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["cgroup"]["id"] == noisy_id && e["enforcer"]["kind"] == kind)
            .collect()
    };
    let suppressed: u64 = of_noisy("summary")
        .iter()
        .map(|e| e["enforcer"]["suppressed"]["count"].as_u64().unwrap_or(0))
        .sum();
    let delivered = of_noisy("violation").len() as u64;
    assert!(suppressed > 0, "no summary of the suppressed events");
    let dropped: u64 = events
        .iter()
        .filter_map(|e| e["enforcer"]["dropped"].as_u64())
        .sum();
    assert_eq!(dropped, 0, "the ring buffer overflowed");
    // Every call is counted, and is either delivered or counted as suppressed.
    let audited = counters(&noisy, "settime").0;
    assert_eq!(audited, flood_calls + 1, "counters are exact");
    assert_eq!(delivered + suppressed_counter(&noisy), audited);
    assert!(suppressed <= suppressed_counter(&noisy));
    assert!(
        tail.settled_events_of(after.pid())
            .iter()
            .any(|e| e["enforcer"]["kind"] == "violation"),
        "the call after the flood was not reported"
    );
    let _ = CGROUP_ROOT;
}
