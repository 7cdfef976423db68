//! Boots a kernel + initramfs in QEMU (TCG; KVM hangs on this kind of host) and follows the
//! serial console. Reusable by every mode: tests, the demo and, later, benches (which set
//! [`VmSpec::smp`] to 1 and pass `-icount shift=0,sleep=off` through [`VmSpec::qemu_extra`]).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd;
use crate::kernels::Kernel;

/// First line /init prints: everything before it is the kernel booting.
pub const BOOTED_MARKER: &str = "ENFORCER-VM-BOOTED";
/// Last line /init prints, with the payload's exit code.
pub const EXIT_MARKER: &str = "ENFORCER-VM-EXIT";

/// The `lsm=` list of a normal boot: BPF LSM active.
pub const LSM_WITH_BPF: &str = "lockdown,capability,landlock,bpf";

/// How long the guest may take to power off after printing its exit marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

pub struct VmSpec<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    /// Value of `enforcer.mode=` (test, demo, bench...), read by /init.
    pub mode: &'a str,
    /// The `lsm=` list ([`LSM_WITH_BPF`] unless a test needs BPF LSM missing).
    pub lsm: String,
    /// Extra kernel command line words (`enforcer.filter=x`, `quiet`, ...).
    pub cmdline_extra: Vec<String>,
    /// Extra QEMU arguments (`-icount shift=0,sleep=off`, ...), after the defaults.
    pub qemu_extra: Vec<String>,
    pub smp: u32,
    pub memory_mib: u32,
    /// Whole-run limit; QEMU is killed when it passes.
    pub timeout: Duration,
    /// Limit for reaching the boot marker (boots take seconds; a stuck one is retried).
    pub boot_timeout: Duration,
}

impl<'a> VmSpec<'a> {
    pub fn new(kernel: &'a Kernel, initrd: &'a Path, mode: &'a str) -> Self {
        Self {
            kernel,
            initrd,
            mode,
            lsm: LSM_WITH_BPF.to_string(),
            cmdline_extra: Vec::new(),
            qemu_extra: Vec::new(),
            smp: 2,
            memory_mib: 1024,
            timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(120),
        }
    }

    fn cmdline(&self) -> String {
        // lsm= is explicit so a test can boot without bpf; panic=-1 + -no-reboot turn a panic
        // into QEMU exiting instead of a hang.
        let mut words = vec![
            "console=ttyS0".to_string(),
            "rdinit=/init".to_string(),
            "panic=-1".to_string(),
            format!("lsm={}", self.lsm),
            format!("enforcer.mode={}", self.mode),
        ];
        words.extend(self.cmdline_extra.iter().cloned());
        words.join(" ")
    }

    fn command(&self) -> Command {
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.smp.to_string()])
            .args(["-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(self.initrd)
            .args(["-append", &self.cmdline()])
            .args(&self.qemu_extra)
            // No stdin: CI has none, and a tty on stdin would be switched to raw mode.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        qemu
    }
}

/// What happened in one VM run.
#[derive(Debug, Default)]
pub struct VmOutcome {
    /// `uname -r` from the boot marker, once /init ran.
    pub booted_release: Option<String>,
    /// Exit code from the exit marker.
    pub exit_code: Option<i32>,
    /// First panic / Oops / BUG line seen.
    pub kernel_error: Option<String>,
    pub timed_out: bool,
    /// The first boot died before /init and this is the second attempt.
    pub retried: bool,
    /// Wall time from starting QEMU to the boot marker.
    pub boot_time: Option<Duration>,
    pub total_time: Duration,
    /// Every console line of the (last) attempt, without `\r`.
    pub console: Vec<String>,
    pub qemu_stderr: String,
}

impl VmOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.kernel_error.is_none() && !self.timed_out
    }

    /// One-line reason for a failed run, `None` when it succeeded.
    pub fn failure_reason(&self) -> Option<String> {
        if let Some(line) = &self.kernel_error {
            return Some(format!("kernel error: {line}"));
        }
        if self.timed_out {
            return Some(if self.booted_release.is_some() {
                "timed out".to_string()
            } else {
                "timed out before /init ran".to_string()
            });
        }
        match self.exit_code {
            Some(0) => None,
            Some(rc) => Some(format!("guest payload exited with {rc}")),
            None if self.booted_release.is_none() => {
                Some("the VM died before /init ran".to_string())
            }
            None => Some("the VM stopped without an exit marker".to_string()),
        }
    }
}

/// True for kernel lines that mean the kernel itself is broken (printk lines start with the
/// `[  time]` stamp, which keeps test output mentioning "BUG:" from matching).
pub fn is_kernel_error(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((_, msg)) = rest.split_once(']') else {
        return false;
    };
    [
        "Kernel panic",
        "Oops",
        "BUG:",
        "kernel BUG",
        "general protection fault",
    ]
    .iter()
    .any(|p| msg.contains(p))
}

/// Boots the VM, handing each console line to `on_line` as it arrives. A VM that dies (or hangs)
/// before /init prints its first line is booted once more: about one TCG boot in fifteen hits
/// an early-boot oops here.
pub fn run(spec: &VmSpec<'_>, on_line: &mut dyn FnMut(&str)) -> Result<VmOutcome> {
    let first = attempt(spec, on_line)?;
    if first.booted_release.is_some() {
        return Ok(first);
    }
    eprintln!(
        "[{}] VM failed before /init ran ({}); retrying the boot once (known TCG early-boot flake)",
        spec.kernel.label(),
        first.failure_reason().unwrap_or_default()
    );
    // Shown so a boot problem that is not the known flake is still visible.
    for line in first.console.iter().rev().take(10).rev() {
        eprintln!("[{}] (failed boot) | {line}", spec.kernel.label());
    }
    let mut second = attempt(spec, on_line)?;
    second.retried = true;
    Ok(second)
}

fn attempt(spec: &VmSpec<'_>, on_line: &mut dyn FnMut(&str)) -> Result<VmOutcome> {
    let mut qemu = spec.command();
    let shown = cmd::display(&qemu);
    let start = Instant::now();
    let mut child = qemu.spawn().with_context(|| {
        format!("cannot start `{shown}`: run `apt-get install -y qemu-system-x86`")
    })?;

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout is piped");
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = clean_line(&String::from_utf8_lossy(&buf));
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut out = VmOutcome::default();
    let mut deadline = start + spec.boot_timeout.min(spec.timeout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // Past the exit marker, a guest that does not power off is not a failure.
                out.timed_out = out.exit_code.is_none();
                kill(&mut child);
                break;
            }
        };
        on_line(&line);
        if out.kernel_error.is_none() && is_kernel_error(&line) {
            out.kernel_error = Some(line.clone());
        }
        if out.booted_release.is_none()
            && let Some(release) = marker_value(&line, BOOTED_MARKER)
        {
            out.booted_release = Some(release.trim().to_string());
            out.boot_time = Some(start.elapsed());
            deadline = start + spec.timeout;
        } else if let Some(rc) = marker_value(&line, EXIT_MARKER) {
            out.exit_code = Some(rc.trim().parse().unwrap_or(-1));
            deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
        }
        out.console.push(line);
    }
    let _ = child.wait();
    out.qemu_stderr = stderr_reader.join().unwrap_or_default();
    out.total_time = start.elapsed();
    Ok(out)
}

/// The text after `marker` in `line`, if the marker is there. Searched anywhere in the line:
/// the serial stream sometimes loses the line break before /init's first line (seen with
/// `quiet`: "Booting from ROM..ENFORCER-VM-BOOTED ...").
pub fn marker_value<'l>(line: &'l str, marker: &str) -> Option<&'l str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

/// Drops terminal control sequences (SeaBIOS clears the screen) and carriage returns, so lines
/// compare and print cleanly.
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // ESC [ params final-byte (CSI), or ESC + one char (e.g. ESC c, reset).
                if chars.next_if_eq(&'[').is_some() {
                    for p in chars.by_ref() {
                        if ('@'..='~').contains(&p) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn kill(child: &mut Child) {
    // Our own child, by handle: never a broad kill.
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_console_lines() {
        assert_eq!(
            clean_line("\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS\r\n"),
            "SeaBIOS"
        );
        assert_eq!(clean_line("test a ... ok\r\n"), "test a ... ok");
    }

    #[test]
    fn finds_markers_mid_line() {
        let line = "Booting from ROM..ENFORCER-VM-BOOTED 6.12.1";
        assert_eq!(marker_value(line, BOOTED_MARKER), Some("6.12.1"));
        assert_eq!(marker_value("ENFORCER-VM-EXIT 3", EXIT_MARKER), Some("3"));
        assert_eq!(marker_value("nothing", EXIT_MARKER), None);
    }

    #[test]
    fn spots_kernel_errors_only_in_printk_lines() {
        assert!(is_kernel_error(
            "[    1.2] BUG: kernel NULL pointer dereference"
        ));
        assert!(is_kernel_error(
            "[    3.0] Kernel panic - not syncing: Fatal exception"
        ));
        assert!(!is_kernel_error("BUG: this is test output"));
        assert!(!is_kernel_error("[    2.3] reboot: Power down"));
    }
}
