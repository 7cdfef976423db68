//! Debian cloud kernels for the VM, resolved with apt at run time (their ABI numbers rotate) and
//! cached, unpacked, under `<cache>/kernels/<package>/`.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, sysdeps, toolchain};

/// The kernel lines we test on: the two Debian LTS branches with BPF LSM built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_12, Series::V6_1];

    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// Anchored `apt-cache search --names-only` regex for this series' unsigned cloud images.
    fn apt_regex(self) -> &'static str {
        match self {
            Series::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
            Series::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64-unsigned$",
        }
    }

    fn matches(self, package: &str) -> bool {
        let prefix = match self {
            Series::V6_1 => "linux-image-6.1.0-",
            Series::V6_12 => "linux-image-6.12.",
        };
        package.starts_with(prefix) && package.ends_with("-cloud-amd64-unsigned")
    }
}

/// An unpacked kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: Series,
    /// Debian package name, e.g. `linux-image-6.12.117+deb12-cloud-amd64-unsigned`.
    pub package: String,
    /// `uname -r`, e.g. `6.12.117+deb12-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// Short label for output prefixes: `6.12.117`, `6.1.0-57`.
    pub fn label(&self) -> String {
        let r = self.release.trim_end_matches("-cloud-amd64");
        r.split('+').next().unwrap_or(r).to_string()
    }
}

fn kernels_dir() -> Result<PathBuf> {
    Ok(toolchain::cache_dir()?.join("kernels"))
}

/// The ABI part of a package name (`6.12.117+deb12`, `6.1.0-57`): a valid Debian version that
/// orders the same way as the package versions.
fn abi_version(package: &str) -> &str {
    package
        .trim_start_matches("linux-image-")
        .trim_end_matches("-cloud-amd64-unsigned")
}

/// Debian version ordering, delegated to dpkg so `~`, `+` and epochs behave exactly as apt's.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let is = |op: &str| {
        Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .is_ok_and(|s| s.success())
    };
    if is("lt") {
        Ordering::Less
    } else if is("gt") {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

fn newest(mut packages: Vec<String>) -> Option<String> {
    packages.sort_by(|a, b| compare_versions(abi_version(a), abi_version(b)));
    packages.pop()
}

fn apt_search(series: Series) -> Result<Vec<String>> {
    let out = cmd::output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        series.apt_regex(),
    ]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| series.matches(p))
        .map(str::to_string)
        .collect())
}

/// The newest package of `series` apt knows, running `apt-get update` once if it knows none.
fn resolve_package(series: Series) -> Result<String> {
    let mut found = apt_search(series)?;
    if found.is_empty() {
        eprintln!(
            "kernel {}: apt knows no package; updating the lists",
            series.name()
        );
        sysdeps::apt_update_once()?;
        found = apt_search(series)?;
    }
    newest(found).with_context(|| format!("apt has no package matching {}", series.apt_regex()))
}

fn cached_packages(series: Series) -> Vec<String> {
    let Ok(dir) = kernels_dir().and_then(|d| Ok(fs::read_dir(d)?)) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|p| series.matches(p))
        .filter(|p| find_vmlinuz(&package_root(p).unwrap_or_default()).is_ok())
        .collect()
}

fn package_root(package: &str) -> Result<PathBuf> {
    Ok(kernels_dir()?.join(package).join("root"))
}

fn find_vmlinuz(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    let entries = fs::read_dir(&boot).with_context(|| format!("no {}", boot.display()))?;
    for entry in entries {
        let name = entry?.file_name().into_string().unwrap_or_default();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((boot.join(&name), release.to_string()));
        }
    }
    bail!("no vmlinuz-* in {}", boot.display())
}

/// Downloads and unpacks `package` unless it is already cached.
fn fetch(package: &str) -> Result<PathBuf> {
    let root = package_root(package)?;
    if find_vmlinuz(&root).is_ok() {
        return Ok(root);
    }
    let dir = root.parent().expect("root has a parent").to_path_buf();
    eprintln!("kernel: downloading {package} into {}", dir.display());
    // Unpack into a scratch dir and rename at the end, so an interrupted run never leaves a
    // half-extracted kernel that later runs would take as cached.
    let scratch = dir.join("partial");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    cmd::output(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(&scratch),
    )
    .with_context(|| format!("cannot download {package}: check network and `apt-get update`"))?;
    let deb = fs::read_dir(&scratch)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", scratch.display()))?;
    let unpacked = scratch.join("root");
    cmd::output(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    find_vmlinuz(&unpacked)?;
    let _ = fs::remove_dir_all(&root);
    fs::rename(&unpacked, &root)?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(root)
}

/// The newest kernel of `series`, downloaded if needed. Falls back to the newest cached one
/// when apt cannot resolve or download (offline runs), and says so.
pub fn resolve(series: Series) -> Result<Kernel> {
    let resolved = resolve_package(series).and_then(|p| fetch(&p).map(|root| (p, root)));
    let (package, root) = match resolved {
        Ok(found) => found,
        Err(e) => {
            let Some(package) = newest(cached_packages(series)) else {
                return Err(e.context(format!(
                    "no {} kernel: apt failed and nothing is cached in {}",
                    series.name(),
                    kernels_dir()?.display()
                )));
            };
            eprintln!(
                "kernel {}: apt failed ({e:#}); using cached {package}",
                series.name()
            );
            let root = package_root(&package)?;
            (package, root)
        }
    };
    let (vmlinuz, release) = find_vmlinuz(&root)?;
    Ok(Kernel {
        series,
        package,
        release,
        vmlinuz,
    })
}
