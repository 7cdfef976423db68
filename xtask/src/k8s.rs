//! A real Kubernetes control plane for the tests. No registry reachable here ships an apiserver
//! binary, and the only server sources any of them ship are Debian bookworm's `kubernetes` source
//! package (v1.20.2 with its vendor tree). So xtask builds `kube-apiserver`, `kubectl`,
//! `kubelet`, `kube-controller-manager` and `kube-scheduler` from it with Debian's Go, offline,
//! adds Debian's etcd, and caches them like the kernels under `<cache>/k8s/<version>/bin`: a
//! fresh machine pays the Go build once (a few minutes), later runs nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cmd, sysdeps, toolchain};

/// The source package version, pinned: its orig tarball is checked against a pinned sha256.
pub const SOURCE_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";
/// What `--version` of the built binaries reports.
pub const KUBERNETES_VERSION: &str = "v1.20.2";
const ORIG_SHA256: &str = "b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc";
/// Our changes to the upstream tree (the reflect2 swap), part of the cache key: bump it when
/// the recipe changes so a stale cache is rebuilt rather than trusted.
const RECIPE: &str = "r1";

/// Go 1.19 (bookworm's), and the reflect2 that works with it: the vendored reflect2 1.0.1
/// breaks on Go >= 1.18 and the apiserver then segfaults on the first CRD it serves.
const GO_PACKAGES: &[&str] = &[
    "golang-1.19-go",
    "golang-1.19-src",
    "golang-github-modern-go-reflect2-dev",
];
const GOROOT: &str = "usr/lib/go-1.19";
const REFLECT2: &str = "usr/share/gocode/src/github.com/modern-go/reflect2";
/// Debian's etcd 3.4 (what 1.20 was released against); it needs only libc.
const ETCD_PACKAGE: &str = "etcd-server";

/// The Go binaries: the apiserver and kubectl for the host tests, the node side for the VM.
pub const GO_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kubectl",
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
];
/// Host tools the upstream Makefile needs: it copies the binaries out with rsync (without it
/// `make` still exits 0 and leaves no binaries) and its scripts call jq.
const BUILD_PACKAGES: &[&str] = &["make", "rsync", "jq"];

/// `<cache>/k8s/<source version>-<recipe>`.
fn version_dir() -> Result<PathBuf> {
    Ok(toolchain::cache_dir()?
        .join("k8s")
        .join(format!("{SOURCE_VERSION}-{RECIPE}")))
}

/// Every cached binary's path, given the cache's `bin` directory.
pub fn binaries(bin: &Path) -> Vec<PathBuf> {
    GO_BINARIES
        .iter()
        .chain(&["etcd"])
        .map(|b| bin.join(b))
        .collect()
}

fn complete(bin: &Path) -> bool {
    binaries(bin).iter().all(|b| b.is_file())
}

/// The cached binaries' directory, if the cache is complete.
pub fn cached() -> Result<Option<PathBuf>> {
    let bin = version_dir()?.join("bin");
    Ok(complete(&bin).then_some(bin))
}

/// The directory holding `etcd` and the Go binaries, built first when the cache lacks any.
pub fn ensure() -> Result<PathBuf> {
    if let Some(bin) = cached()? {
        return Ok(bin);
    }
    let dir = version_dir()?;
    let started = Instant::now();
    eprintln!(
        "k8s: building Kubernetes {KUBERNETES_VERSION} from Debian's `kubernetes` {SOURCE_VERSION} \
         into {} (once per machine; a few minutes on 2 cores)",
        dir.display()
    );
    sysdeps::ensure_packages(BUILD_PACKAGES)?;
    // Everything happens in a scratch dir renamed at the end: an interrupted build leaves nothing
    // that a later run would take as cached.
    let scratch = dir.join("partial");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let built = build(&scratch)?;
    let bin = dir.join("bin");
    let _ = fs::remove_dir_all(&bin);
    fs::rename(&built, &bin)?;
    // The tree and Go's cache are ~3 GB; only the binaries are kept.
    fs::remove_dir_all(&scratch).with_context(|| format!("cannot remove {}", scratch.display()))?;
    eprintln!(
        "k8s: built and cached in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    Ok(bin)
}

/// `cargo xtask k8s`: builds unless cached, then prints every binary's path.
pub fn print_paths() -> Result<()> {
    for bin in binaries(&ensure()?) {
        println!("{}", bin.display());
    }
    Ok(())
}

/// Fetches, patches and builds in `scratch`; returns the directory holding the binaries.
fn build(scratch: &Path) -> Result<PathBuf> {
    let debs = scratch.join("debs");
    let root = scratch.join("root");
    fs::create_dir_all(&debs)?;
    cmd::output(
        Command::new("apt-get")
            .arg("download")
            .args(GO_PACKAGES)
            .arg(ETCD_PACKAGE)
            .current_dir(&debs),
    )
    .context("cannot download Go and etcd: check network and `apt-get update`")?;
    for entry in fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|x| x == "deb") {
            cmd::output(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        }
    }

    let tree = fetch_source(scratch)?;
    swap_reflect2(&tree, &root.join(REFLECT2))?;
    // The Makefile builds in GOPATH mode, with the tree at its import path.
    let gopath_link = tree.join(".go/src/k8s.io/kubernetes");
    fs::create_dir_all(gopath_link.parent().expect("has a parent"))?;
    std::os::unix::fs::symlink("../../..", &gopath_link)?;

    let goroot = root.join(GOROOT);
    let path = std::env::join_paths(std::iter::once(goroot.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let what: Vec<String> = GO_BINARIES.iter().map(|b| format!("cmd/{b}")).collect();
    cmd::run(
        Command::new("make")
            .arg(format!("WHAT={}", what.join(" ")))
            .current_dir(&tree)
            .env("PATH", path)
            .env("GOROOT", &goroot)
            .env("GOPATH", tree.join(".go"))
            .env("CGO_ENABLED", "0")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("GO111MODULE", "")
            // The version stamped into the binaries comes from `hack/lib/version.sh`, which
            // the release archive has filled in (there is no git metadata to ask).
            .env("GOTOOLCHAIN", "local"),
    )
    .context("the Kubernetes build failed")?;

    let bin = scratch.join("bin");
    fs::create_dir_all(&bin)?;
    for b in GO_BINARIES {
        let from = tree.join("_output/bin").join(b);
        fs::copy(&from, bin.join(b))
            .with_context(|| format!("the build left no {}", from.display()))?;
    }
    fs::copy(root.join("usr/bin/etcd"), bin.join("etcd"))
        .context("the etcd-server package holds no usr/bin/etcd")?;
    let version = cmd::output(Command::new(bin.join("kube-apiserver")).arg("--version"))?;
    if !version.contains(KUBERNETES_VERSION) {
        bail!("the built kube-apiserver reports {version:?}, not {KUBERNETES_VERSION}");
    }
    Ok(bin)
}

/// Downloads the source package through a private apt config (the system's Debian entries as
/// `deb-src`; the system's sources and lists stay untouched), checks the orig tarball and
/// unpacks it; returns the tree.
fn fetch_source(scratch: &Path) -> Result<PathBuf> {
    let apt = scratch.join("apt");
    let parts = apt.join("sources.list.d");
    for d in [
        &parts,
        &apt.join("lists/partial"),
        &apt.join("cache/archives/partial"),
    ] {
        fs::create_dir_all(d)?;
    }
    let system = Path::new("/etc/apt/sources.list.d/debian.sources");
    let sources = fs::read_to_string(system).with_context(|| {
        format!(
            "cannot read {}: the source package is found through its Debian entries",
            system.display()
        )
    })?;
    fs::write(parts.join("debian-src.sources"), as_deb_src(&sources))?;
    let conf = apt.join("apt.conf");
    fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{a}/sources.list\";\n\
             Dir::Etc::SourceParts \"{a}/sources.list.d\";\n\
             Dir::State::Lists \"{a}/lists\";\n\
             Dir::Cache \"{a}/cache\";\n",
            a = apt.display()
        ),
    )?;
    let apt_get = |args: &[&str], dir: &Path| {
        let mut c = Command::new("apt-get");
        c.args(args).env("APT_CONFIG", &conf).current_dir(dir);
        c
    };
    cmd::output(&mut apt_get(&["update"], &apt)).context("apt-get update (deb-src) failed")?;
    let src = scratch.join("src");
    fs::create_dir_all(&src)?;
    cmd::output(&mut apt_get(
        &[
            "source",
            "--download-only",
            &format!("kubernetes={SOURCE_VERSION}"),
        ],
        &src,
    ))
    .with_context(|| format!("cannot download the source package kubernetes={SOURCE_VERSION}"))?;

    let orig = fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".orig.tar"))
        })
        .with_context(|| format!("apt-get source left no orig tarball in {}", src.display()))?;
    let sum = cmd::output(Command::new("sha256sum").arg(&orig))?;
    if sum.split_whitespace().next() != Some(ORIG_SHA256) {
        bail!(
            "{} has sha256 {sum:?}, expected {ORIG_SHA256}",
            orig.display()
        );
    }
    let tree = scratch.join("tree");
    fs::create_dir_all(&tree)?;
    cmd::output(
        Command::new("tar")
            .arg("-xf")
            .arg(&orig)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(&tree),
    )?;
    if !tree.join("Makefile").is_file() || !tree.join("vendor").is_dir() {
        bail!("{} unpacked without a Makefile and vendor/", orig.display());
    }
    Ok(tree)
}

/// The deb822 `sources` with every entry turned into a source-package entry (same mirrors,
/// suites and keys).
fn as_deb_src(sources: &str) -> String {
    sources
        .lines()
        .map(|l| match l.trim().strip_prefix("Types:") {
            Some(_) => "Types: deb-src",
            None => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Replaces the vendored reflect2 by Debian's package files (its go.mod and tests left out, as
/// vendored packages have none).
fn swap_reflect2(tree: &Path, debian: &Path) -> Result<()> {
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    fs::remove_dir_all(&vendored)
        .with_context(|| format!("no vendored reflect2 at {}", vendored.display()))?;
    fs::create_dir_all(&vendored)?;
    let entries =
        fs::read_dir(debian).with_context(|| format!("no reflect2 at {}", debian.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let module_file = name == "go.mod" || name == "go.sum";
        if path.is_file() && !module_file && !name.ends_with("_test.go") {
            fs::copy(&path, vendored.join(&*name))?;
        }
    }
    // Go checks vendor/modules.txt against go.mod, not the files: the version stays as listed.
    Ok(())
}

/// The host tests against a loopback control plane (`tests/tests/host_k8s.rs`, and the node
/// agent's `host_k8s_agent.rs`), with the cached binaries built first if need be. When they
/// cannot be built (no network on a fresh machine, not root for the build tools) the tests are
/// skipped, loudly: everything else still runs.
pub fn run_host_tests() -> Result<()> {
    let bin = match ensure() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!(
                "SKIPPED host_k8s: the Kubernetes control plane cannot be built here: {e:#}\n\
                 SKIPPED host_k8s: `cargo xtask k8s` retries the build and says why it fails"
            );
            return Ok(());
        }
    };
    cmd::run(
        toolchain::cargo()?
            .args(["test", "-p", "integration-tests", "--test", "host_k8s"])
            // The node agent against the same control plane (the enforcer binary is built by
            // the syscall-layer phase before this one).
            .args(["--test", "host_k8s_agent"])
            .env("ENFORCER_K8S_BIN", bin),
    )
    .context("host control-plane tests failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_entries_keep_mirrors_suites_and_keys() {
        let system = "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n\
                      Signed-By: /k.gpg\n\nTypes: deb\nURIs: http://sec.example\nSuites: bookworm-security\n";
        assert_eq!(
            as_deb_src(system),
            "Types: deb-src\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n\
             Signed-By: /k.gpg\n\nTypes: deb-src\nURIs: http://sec.example\nSuites: bookworm-security\n"
        );
    }
}
