//! Real container runtimes for the VM tests: Debian's `runc` and `crun` packages, downloaded with
//! `apt-get download` and unpacked with `dpkg -x` at test time (like the kernels), cached under
//! `<cache>/runtimes/root`, and put into the initramfs with every shared library they load
//! (resolved with `ldd` against the unpacked tree first, then the host's libraries).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, toolchain};

/// The packages, and the libraries the host may lack (crun's JSON parser).
const PACKAGES: &[&str] = &["runc", "crun", "libyajl2"];
/// The runtimes' binaries, as paths in the unpacked tree and in the guest.
const BINARIES: &[&str] = &["usr/sbin/runc", "usr/bin/crun"];

fn root_dir() -> Result<PathBuf> {
    Ok(toolchain::cache_dir()?.join("runtimes").join("root"))
}

fn complete(root: &Path) -> bool {
    BINARIES.iter().all(|bin| root.join(bin).is_file())
}

/// Downloads and unpacks the packages unless they are cached.
fn fetch() -> Result<PathBuf> {
    let root = root_dir()?;
    if complete(&root) {
        return Ok(root);
    }
    let dir = root.parent().expect("root has a parent").to_path_buf();
    eprintln!(
        "runtimes: downloading {} into {}",
        PACKAGES.join(" "),
        dir.display()
    );
    // Unpacked into a scratch dir and renamed at the end: an interrupted run leaves nothing that
    // a later run would take as cached.
    let scratch = dir.join("partial");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    cmd::output(
        Command::new("apt-get")
            .arg("download")
            .args(PACKAGES)
            .current_dir(&scratch),
    )
    .context("cannot download the runtime packages: check network and `apt-get update`")?;
    let unpacked = scratch.join("root");
    for entry in fs::read_dir(&scratch)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|x| x == "deb") {
            cmd::output(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
        }
    }
    if !complete(&unpacked) {
        bail!(
            "the runtime packages hold no {} in {}",
            BINARIES.join(" or "),
            unpacked.display()
        );
    }
    let _ = fs::remove_dir_all(&root);
    fs::rename(&unpacked, &root)?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(root)
}

/// The shared objects `ldd` names for `binary` (the dynamic loader included), with the unpacked
/// tree's library directory searched first.
fn libraries(root: &Path, binary: &Path) -> Result<Vec<PathBuf>> {
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    let out = cmd::output(
        Command::new("ldd")
            .arg(binary)
            .env("LD_LIBRARY_PATH", &libdir),
    )?;
    let mut found = Vec::new();
    for line in out.lines().map(str::trim) {
        if line.contains("not found") {
            bail!(
                "{} needs a library neither the runtime packages nor this host have: {line}",
                binary.display()
            );
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            found.push(PathBuf::from(path));
        }
    }
    Ok(found)
}

/// `(guest path, host file)` pairs: the runtimes and their libraries. A library from the
/// unpacked tree goes to the guest's `/usr/lib/x86_64-linux-gnu`, a host library to the path
/// `ldd` named (the dynamic loader searches both).
pub fn initramfs_entries() -> Result<Vec<(String, PathBuf)>> {
    let root = fetch()?;
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    for bin in BINARIES {
        let host = root.join(bin);
        entries.push((bin.to_string(), host.clone()));
        for lib in libraries(&root, &host)? {
            let guest = match lib.strip_prefix(&root) {
                Ok(inside) => inside.display().to_string(),
                Err(_) => lib.display().to_string().trim_start_matches('/').to_owned(),
            };
            if seen.insert(guest.clone()) {
                entries.push((guest, lib));
            }
        }
    }
    Ok(entries)
}
