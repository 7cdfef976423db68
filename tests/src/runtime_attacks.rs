//! Attacks on workload arming from the container image, with real runc and crun: an exec that
//! the image chooses must never keep a runtime's setup state (which the policy does not bind).
//!
//! - An entrypoint named like a memfd (`/memfd:x`, a regular file in the image): a memfd is
//!   recognised by the kernel's internal mount it lives on, never by its name.
//! - An entrypoint of `/proc/self/exe`: the runtime's own binary again, whose ELF interpreter
//!   the kernel loads from the container's root, so the image's loader runs in that process.
//!   Exec keeps setup only while the process's root and mount namespace are still the host's,
//!   and the entrypoint's exec comes after the runtime entered the container's.
use std::{fs, thread, time::Duration};

use serde_json::Value;

use crate::{
    harness::{Cgroup, Tail, counters, enforcer_ok},
    matrix::EPERM,
    runtimes::{Container, Runtime},
};

fn pod(name: &str) -> Cgroup {
    let pod = Cgroup::new(name);
    enforcer_ok(&[
        "attach",
        "--cgroup",
        pod.arg(),
        "--deny",
        "mount",
        "--arm",
        "exec",
    ]);
    pod
}

fn assert_refused(pod: &Cgroup, tail: &Tail, report: &Value, what: &str) {
    assert_eq!(report["errno"], EPERM, "{what} mounted as setup: {report}");
    // The report's pid is the container's pid namespace's, the event's the host's.
    tail.wait_for(|event| {
        event["enforcer"]["operation"] == "mount" && event["event"]["outcome"] == "failure"
    });
    // At least the entrypoint's (one 6.1 run under load counted a second denial in the pod,
    // from a process the test does not see; the entrypoint's refusal above is the proof).
    assert!(counters(pod, "mount").1 >= 1, "{what}: not counted");
}

fn memfd_named_entrypoint(runtime: Runtime, name: &str) {
    let pod = pod(name);
    let tail = Tail::start(&[]);
    let mut container = Container::with_args(
        runtime,
        &format!("{name}-c"),
        &format!("/{name}/ctr"),
        &["/memfd:x", "--out", "/out/entry", "mount-tmpfs", "/mnt"],
    );
    fs::copy(
        container.dir.join("rootfs/bin/probe"),
        container.dir.join("rootfs/memfd:x"),
    )
    .expect("plant /memfd:x");
    container.start_ok();
    let report = container.report("entry");
    assert_refused(&pod, &tail, &report, "an entrypoint named memfd:x");
}

#[test]
fn runc_an_entrypoint_named_like_a_memfd_is_subject() {
    memfd_named_entrypoint(Runtime::Runc, "ra-memfd-runc");
}

#[test]
fn crun_an_entrypoint_named_like_a_memfd_is_subject() {
    memfd_named_entrypoint(Runtime::Crun, "ra-memfd-crun");
}

fn runtime_binary_with_the_images_loader(runtime: Runtime, name: &str) {
    let pod = pod(name);
    let tail = Tail::start(&[]);
    let mut container = Container::with_args(
        runtime,
        &format!("{name}-c"),
        &format!("/{name}/ctr"),
        &["/proc/self/exe"],
    );
    fs::copy(
        "/bin/fakeld",
        container.dir.join("rootfs/lib64/ld-linux-x86-64.so.2"),
    )
    .expect("plant the image's loader");
    // The runtime may say the container failed (its process exits at once); the loader's
    // report is what counts.
    let _ = container.start();
    let Some(report) = container.try_report("ldso", Duration::from_secs(60)) else {
        // On Debian's 6.1 kernel the runtime's exec of /proc/self/exe in the container never
        // runs the image's loader (nothing is written, on the code before and after the fix
        // alike; not understood yet), so the attack cannot be played there.
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        assert!(
            release.starts_with("6.1."),
            "the image's loader wrote no /out/ldso within 60 s; runtime log: {}",
            container.log()
        );
        eprintln!(
            "SKIPPED on {}: the image's loader did not run",
            release.trim()
        );
        return;
    };
    assert_refused(
        &pod,
        &tail,
        &report,
        "the image's loader in the runtime's binary",
    );
    thread::sleep(Duration::from_millis(100));
}

#[test]
fn runc_the_images_loader_in_the_runtimes_binary_is_subject() {
    runtime_binary_with_the_images_loader(Runtime::Runc, "ra-ldso-runc");
}

#[test]
fn crun_the_images_loader_in_the_runtimes_binary_is_subject() {
    runtime_binary_with_the_images_loader(Runtime::Crun, "ra-ldso-crun");
}
