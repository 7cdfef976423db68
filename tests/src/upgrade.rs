//! Upgrades without a gap: two builds that differ in a program, and a map layout change.
//!
//! The second build is the same `enforcer` binary run with the hidden `--bpf-object`, loading the
//! BPF object `cargo xtask test` built with the `upgrade-test-variant` feature (`ENFORCER_NEXT_BPF`):
//! its `capable` program has one more, never true, comparison, so that program's tag differs while
//! every decision stays the same. The map ABI change is the hidden `--test-abi 2`: this build
//! acting as map layout v2 finds the v1 pins and migrates them with the real v1 reader.
//!
//! Each test leaves nothing pinned (`enforcer reset` on the way out, whatever happened).
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    daemon::Daemon,
    harness::{Cgroup, Run, counters, enforcer, enforcer_ok, probe},
    matrix::EPERM,
};

const PIN_BASE: &str = "/sys/fs/bpf/enforcer";
const LINKS_V1: &str = "/sys/fs/bpf/enforcer/v1/links";
const LINKS_V2: &str = "/sys/fs/bpf/enforcer/v2/links";
/// The hooks, by program name; the variant build changes `capable` only.
/// Every program's link pin, sorted (the LSM programs, tamper protection's and workload
/// arming's).
const PROGRAMS: [&str; 20] = [
    "arm_attach",
    "arm_exec",
    "arm_fork",
    "arm_free",
    "arm_move",
    "bpf",
    "bpf_map",
    "bpf_prog",
    "capable",
    "inode_rename",
    "inode_rmdir",
    "inode_unlink",
    "key_alloc",
    "key_permission",
    "move_mount",
    "ptrace_access",
    "ptrace_traceme",
    "sb_mount",
    "sb_pivotroot",
    "sb_umount",
];
const CHANGED: &str = "capable";

/// What an upgrade in place says when it replaced every program.
fn replaced_all() -> String {
    format!(
        "upgraded the programs in place: {} links replaced",
        PROGRAMS.len()
    )
}
/// TCG is slow: generous, but bounded.
const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn next_object() -> String {
    let path =
        std::env::var("ENFORCER_NEXT_BPF").unwrap_or_else(|_| "/lib/enforcer-next.bpf.o".into());
    assert!(
        Path::new(&path).is_file(),
        "the second build's BPF object {path} is missing (`cargo xtask test` builds it)"
    );
    path
}

/// Runs `enforcer` with hidden global options in front of `args`.
fn enforcer_with(options: &[&str], args: &[&str]) -> Run {
    let all: Vec<&str> = options.iter().chain(args).copied().collect();
    enforcer(&all)
}

/// Runs the second build.
fn next(args: &[&str]) -> Run {
    let object = next_object();
    enforcer_with(&["--bpf-object", &object], args)
}

fn ok(run: Run, what: &str) -> Run {
    assert!(run.status.success(), "{what} failed: {run:?}");
    run
}

/// Removes every pin when dropped, so a failed test leaves the next one a clean kernel.
struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        let _ = enforcer(&["reset"]);
    }
}

/// Keeps this test's thread, and so every process it starts from now on (both builds; the hammer
/// pins itself again after it joins its cgroup), on CPU 0 while it lives. Under QEMU's TCG with two vCPUs, a call site that one vCPU executes
/// in a tight loop while the other patches it (attaching or detaching a trampoline) can hit a
/// stale breakpoint: the "Oops: int3" the early-boot flake also shows, which crashed both kernels
/// here on the first try. On one CPU the hammer's calls still interleave with every step of the
/// swap (at each preemption); that a single link change is atomic for other CPUs is the kernel's
/// text patching, not enforcer's.
struct OneCpu(nix::sched::CpuSet);

impl OneCpu {
    fn new() -> Self {
        use nix::{sched, unistd::Pid};
        let saved = sched::sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
        let mut one = sched::CpuSet::new();
        one.set(0).expect("CPU 0");
        sched::sched_setaffinity(Pid::from_raw(0), &one).expect("sched_setaffinity");
        Self(saved)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

/// What a link pin holds: the link, its program and the program's tag (a hash of its
/// instructions, computed by the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pinned {
    link: u32,
    program: u32,
    tag: [u8; 8],
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

fn bpf(cmd: libc::c_long, attr: &[u8]) -> i64 {
    // SAFETY: `attr` is a valid attribute buffer for `cmd` of `attr.len()` bytes; the kernel
    // writes only through the pointers inside it, which the callers own.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len()) }
}

/// The first `N` bytes of the kernel's info about the object behind `fd` (closed here).
fn info<const N: usize>(fd: i64) -> [u8; N] {
    let mut info = [0u8; N];
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(N as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    let ret = bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd as i32) };
    assert_eq!(ret, 0, "BPF_OBJ_GET_INFO_BY_FD: {err}");
    info
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// An fd for the loaded program with this id, if it is still loaded.
fn program_fd(id: u32) -> Option<i64> {
    let mut attr = [0u8; 12];
    attr[0..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &attr);
    (fd >= 0).then_some(fd)
}

fn loaded(id: u32) -> bool {
    program_fd(id).is_some_and(|fd| {
        // SAFETY: our fd.
        unsafe { libc::close(fd as i32) };
        true
    })
}

/// Every link pin under `dir`, by name.
fn pinned(dir: &str) -> BTreeMap<String, Pinned> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("link pins").flatten() {
        let path = CString::new(entry.path().to_str().expect("utf-8")).expect("path");
        let mut attr = [0u8; 16];
        attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
        let fd = bpf(BPF_OBJ_GET, &attr);
        assert!(
            fd >= 0,
            "BPF_OBJ_GET {path:?}: {}",
            std::io::Error::last_os_error()
        );
        // struct bpf_link_info: type, id, prog_id.
        let link: [u8; 12] = info(fd);
        let program = u32_at(&link, 8);
        // struct bpf_prog_info: type, id, tag[8].
        let prog: [u8; 16] = info(program_fd(program).expect("the linked program is loaded"));
        found.insert(
            entry.file_name().to_string_lossy().into_owned(),
            Pinned {
                link: u32_at(&link, 4),
                program,
                tag: prog[8..16].try_into().expect("8 bytes"),
            },
        );
    }
    found
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until none of these programs is loaded any more: their links were let go.
fn wait_released(programs: &BTreeMap<String, Pinned>) {
    wait_until("the replaced programs to be released", || {
        programs.values().all(|p| !loaded(p.program))
    });
}

/// A probe that calls `settimeofday(NULL, NULL)` in `cgroup` until told to stop, counting.
struct Hammer {
    child: Child,
    stop: String,
}

impl Hammer {
    fn start(cgroup: &Cgroup, name: &str) -> Self {
        let stop = format!("/tmp/{name}-stop");
        let _ = fs::remove_file(&stop);
        let probe_bin = crate::harness::probe_bin();
        let child = Command::new(probe_bin)
            // Pinned again after joining the cgroup: a cgroup move resets the CPUs when the
            // cpuset controller is on (runc turns it on at the root in the runtime tests).
            .args([
                "--cgroup",
                cgroup.arg(),
                "--cpu",
                "0",
                "settime-until",
                &stop,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the hammer");
        Self { child, stop }
    }

    /// Stops it: (calls, refused).
    fn stop(self) -> (u64, u64) {
        fs::write(&self.stop, "").expect("stop the hammer");
        let output = self.child.wait_with_output().expect("hammer");
        let _ = fs::remove_file(&self.stop);
        let report: Value = serde_json::from_slice(&output.stdout).expect("hammer JSON");
        (
            report["calls"].as_u64().expect("calls"),
            report["ret"].as_u64().expect("refused"),
        )
    }
}

/// `list --json` of a build, by cgroup id: (operations with their actions and counters).
fn policies(options: &[&str]) -> BTreeMap<u64, Value> {
    let run = ok(enforcer_with(options, &["list", "--json"]), "list");
    let list: Value = serde_json::from_str(&run.stdout).expect("list JSON");
    list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| {
            (
                p["cgroup_id"].as_u64().expect("id"),
                p["operations"].clone(),
            )
        })
        .collect()
}

fn actions(operations: &Value) -> BTreeMap<String, Value> {
    operations
        .as_object()
        .expect("operations")
        .iter()
        .map(|(op, entry)| (op.clone(), entry["action"].clone()))
        .collect()
}

fn denied_in(list: &BTreeMap<u64, Value>, cgroup: &Cgroup) -> u64 {
    list[&cgroup.id()]["settime"]["denied"]
        .as_u64()
        .expect("denied")
}

#[test]
fn another_build_replaces_every_program_in_place_without_a_gap_and_back() {
    let _reset = ResetOnDrop;
    let _one_cpu = OneCpu::new();
    let denied = Cgroup::new("up-denied");
    let audited = Cgroup::new("up-audited");
    let added = Cgroup::new("up-added");
    enforcer_ok(&["attach", "--cgroup", denied.arg(), "--deny", "settime"]);
    enforcer_ok(&[
        "attach",
        "--cgroup",
        audited.arg(),
        "--audit",
        "settime",
        "--deny",
        "keyctl",
    ]);
    assert_eq!(probe(Some(&audited), &["settime-loop", "3"]).ret(), 0);
    let first = pinned(LINKS_V1);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        PROGRAMS.iter().collect::<Vec<_>>()
    );
    let before = policies(&[]);

    let hammer = Hammer::start(&denied, "up-inplace");
    wait_until("the hammer to be denied", || {
        counters(&denied, "settime").1 > 0
    });

    let before_swap = counters(&denied, "settime").1;
    let upgrade = ok(
        next(&["attach", "--cgroup", added.arg(), "--deny", "mount"]),
        "the second build's attach",
    );
    let after_swap = counters(&denied, "settime").1;
    assert!(
        after_swap > before_swap,
        "the hammer made no call while the programs were replaced"
    );
    eprint!("{}", upgrade.stderr);
    let lines: Vec<&str> = upgrade.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per step: {:?}", upgrade.stderr);
    assert!(lines[0].contains("are another build's"), "{}", lines[0]);
    assert!(lines[1].contains(&replaced_all()), "{}", lines[1]);
    let kept = format!("{} policies and their counters kept", before.len());
    assert!(lines[1].contains(&kept), "{}", lines[1]);

    let second = pinned(LINKS_V1);
    for name in PROGRAMS {
        let (old, new) = (first[name], second[name]);
        assert_ne!(old.link, new.link, "{name}: the link was not replaced");
        assert_ne!(
            old.program, new.program,
            "{name}: the program was not replaced"
        );
        if name == CHANGED {
            assert_ne!(
                old.tag, new.tag,
                "{name}: the second build's program has another tag"
            );
        } else {
            assert_eq!(old.tag, new.tag, "{name}: same instructions, same tag");
        }
    }
    wait_released(&first);
    let at_swap = counters(&denied, "settime").1;
    wait_until("the new programs to deny", || {
        counters(&denied, "settime").1 > at_swap
    });

    let (calls, refused) = hammer.stop();
    eprintln!(
        "hammer: {calls} calls, {refused} refused, {} of them while the upgrade ran",
        after_swap - before_swap
    );
    assert!(calls > 0);
    assert_eq!(refused, calls, "a call slipped through during the swap");
    assert_eq!(
        counters(&denied, "settime").1,
        calls,
        "each refused call was counted exactly once, also while both programs were attached"
    );
    let after = policies(&[]);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    for cgroup in [&denied, &audited] {
        assert_eq!(
            actions(&after[&cgroup.id()]),
            actions(&before[&cgroup.id()]),
            "{}: policy changed",
            cgroup.arg()
        );
    }
    assert_eq!(after[&audited.id()], before[&audited.id()], "counters kept");
    assert_eq!(after[&added.id()]["mount"]["action"], "deny");

    // The second build adopts its own programs: running it again changes nothing.
    let again = ok(
        next(&["attach", "--cgroup", added.arg(), "--deny", "mount"]),
        "the second build again",
    );
    assert_eq!(again.stderr, "", "nothing to upgrade");
    assert_eq!(pinned(LINKS_V1), second);

    // A downgrade is another build too: the first build puts its own programs back, the same way.
    let back = ok(
        enforcer(&["attach", "--cgroup", added.arg(), "--deny", "mount"]),
        "the first build again",
    );
    assert!(back.stderr.contains(&replaced_all()), "{:?}", back.stderr);
    let third = pinned(LINKS_V1);
    for name in PROGRAMS {
        assert_eq!(
            third[name].tag, first[name].tag,
            "{name}: the first build's program"
        );
        assert_ne!(third[name].program, second[name].program, "{name}");
    }
    wait_released(&second);
    assert_eq!(probe(Some(&denied), &["settime-loop", "5"]).ret(), 5);
    assert_eq!(counters(&denied, "settime").1, calls + 5);
    assert_eq!(counters(&audited, "settime").0, 3);
}

/// A running `enforcer daemon`, stopped when dropped.

#[test]
fn a_daemon_of_the_new_build_upgrades_at_start_and_reads_on_across_a_replacement() {
    let _reset = ResetOnDrop;
    let cgroup = Cgroup::new("up-daemon");
    enforcer_ok(&["attach", "--cgroup", cgroup.arg(), "--deny", "settime"]);
    let first = pinned(LINKS_V1);

    let object = next_object();
    let daemon = Daemon::start_with(&["--bpf-object", &object], &[]);
    let stderr = daemon.stderr();
    assert!(stderr.contains(&replaced_all()), "{stderr}");
    assert!(
        stderr.contains("replaced another build's pinned programs in place under"),
        "{stderr}"
    );
    assert_ne!(pinned(LINKS_V1)[CHANGED].tag, first[CHANGED].tag);
    let attempt = probe(Some(&cgroup), &["settimeofday", "0"]);
    assert_eq!(attempt.errno(), EPERM);
    wait_until("the daemon to deliver the event", || {
        daemon
            .events()
            .iter()
            .any(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()))
    });

    // Another build replaces the programs while the daemon runs (`check` installs too): the maps
    // stay, so the daemon goes on reading the same ring buffer, and says what happened.
    let check = ok(enforcer(&["check"]), "check of the first build");
    assert!(check.stderr.contains(&replaced_all()), "{:?}", check.stderr);
    assert_eq!(pinned(LINKS_V1)[CHANGED].tag, first[CHANGED].tag);
    wait_until("the daemon to notice the replacement", || {
        daemon.stderr().contains("were replaced in place")
    });
    let attempt = probe(Some(&cgroup), &["settimeofday", "0"]);
    assert_eq!(attempt.errno(), EPERM);
    wait_until("the daemon to deliver after the replacement", || {
        daemon
            .events()
            .iter()
            .any(|e| e["process"]["pid"].as_u64() == Some(attempt.pid()))
    });
    assert_eq!(counters(&cgroup, "settime").1, 2);
}

#[test]
fn a_layout_change_is_migrated_without_a_gap() {
    let _reset = ResetOnDrop;
    let _one_cpu = OneCpu::new();
    let v2 = ["--test-abi", "2"];
    let denied = Cgroup::new("up-mig-denied");
    let audited = Cgroup::new("up-mig-audited");
    let added = Cgroup::new("up-mig-added");
    enforcer_ok(&["attach", "--cgroup", denied.arg(), "--deny", "settime"]);
    enforcer_ok(&["attach", "--cgroup", audited.arg(), "--audit", "settime"]);
    assert_eq!(probe(Some(&audited), &["settime-loop", "3"]).ret(), 0);
    let first = pinned(LINKS_V1);
    let before = policies(&[]);

    let hammer = Hammer::start(&denied, "up-migrate");
    wait_until("the hammer to be denied", || {
        counters(&denied, "settime").1 > 0
    });
    let counted_before = counters(&denied, "settime").1;

    let migration = ok(
        enforcer_with(&v2, &["attach", "--cgroup", added.arg(), "--deny", "mount"]),
        "the layout v2 attach",
    );
    eprint!("{}", migration.stderr);
    let lines: Vec<&str> = migration.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "one line per step: {:?}", migration.stderr);
    assert!(
        lines[0].contains("found the pins of map layout v1"),
        "{}",
        lines[0]
    );
    let copied = format!("copied {} policies with their counters", before.len());
    assert!(lines[1].contains(&copied), "{}", lines[1]);
    assert!(
        lines[2].contains(&format!(
            "attached this build's {} programs",
            PROGRAMS.len()
        )),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("removed the v1 pins"), "{}", lines[3]);
    assert!(!Path::new(LINKS_V1).exists(), "the v1 pins are gone");
    let second = pinned(LINKS_V2);
    assert_eq!(second.len(), PROGRAMS.len());
    wait_released(&first);
    let at_swap = denied_in(&policies(&v2), &denied);
    wait_until("the v2 programs to deny", || {
        denied_in(&policies(&v2), &denied) > at_swap
    });

    let (calls, refused) = hammer.stop();
    assert!(calls > 0);
    assert_eq!(
        refused, calls,
        "a call slipped through during the migration"
    );
    let after = policies(&v2);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    let counted = denied_in(&after, &denied);
    // The copy carries what v1 had counted when it was made; decisions the v1 programs made in
    // the milliseconds before they were let go stay in v1's counters.
    assert!(
        (counted_before..=calls).contains(&counted),
        "{counted_before} <= {counted} <= {calls}"
    );
    for cgroup in [&denied, &audited] {
        assert_eq!(
            actions(&after[&cgroup.id()]),
            actions(&before[&cgroup.id()]),
            "{}: policy changed",
            cgroup.arg()
        );
    }
    assert_eq!(after[&audited.id()], before[&audited.id()], "counters kept");
    assert_eq!(after[&added.id()]["mount"]["action"], "deny");
    assert_eq!(
        probe(Some(&denied), &["settimeofday", "0"]).errno(),
        EPERM,
        "the migrated policy is enforced"
    );

    // A build of the older layout cannot read the new maps: it refuses, in one line, and changes
    // nothing.
    for args in [
        &["attach", "--cgroup", added.arg(), "--deny", "mount"][..],
        &["list"][..],
    ] {
        let old = enforcer(args);
        eprint!("{}", old.stderr);
        assert_eq!(old.code(), Some(1), "{args:?}: {old:?}");
        assert_eq!(old.stderr.lines().count(), 1, "{:?}", old.stderr);
        assert!(
            old.stderr
                .contains("map layout v2, newer than this enforcer's v1"),
            "{:?}",
            old.stderr
        );
        assert!(old.stderr.contains("enforcer reset"), "{:?}", old.stderr);
    }
    assert_eq!(pinned(LINKS_V2), second);

    // `reset` (of either build) removes every layout's pins.
    enforcer_ok(&["reset"]);
    let left: Vec<_> = fs::read_dir(PIN_BASE)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(left, Vec::<std::path::PathBuf>::new());
    wait_until("the reset to end enforcement", || {
        probe(Some(&denied), &["settime-loop", "1"]).ret() == 0
    });
}
