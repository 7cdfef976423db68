//! The guest's initramfs: a newc cpio written with the `cpio` crate (no root, no mknod, no
//! temp tree), holding a static busybox, our /init and the guest binaries.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use cpio::NewcBuilder;

use crate::{cmd, sysdeps};

const INIT: &str = include_str!("../assets/init");
const DEMO: &str = include_str!("../assets/demo.sh");

/// Where busybox-static puts its binary on Debian.
const HOST_BUSYBOX: &str = "/bin/busybox";

enum Contents {
    Dir,
    Bytes(Vec<u8>),
    HostFile(PathBuf),
    Symlink(String),
}

/// An in-memory list of entries, written out in one go by [`Initramfs::write`].
#[derive(Default)]
pub struct Initramfs {
    entries: Vec<(String, u32, Contents)>,
    dirs: BTreeSet<String>,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` (and its parents) as directories; repeated calls are no-ops.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return self;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entries
            .push((path.to_string(), 0o040755, Contents::Dir));
        self
    }

    fn parent_of(&mut self, path: &str) -> String {
        let path = path.trim_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    pub fn bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let path = self.parent_of(path);
        self.entries
            .push((path, 0o100000 | mode, Contents::Bytes(data.to_vec())));
        self
    }

    pub fn host_file(&mut self, path: &str, mode: u32, src: &Path) -> &mut Self {
        let path = self.parent_of(path);
        self.entries
            .push((path, 0o100000 | mode, Contents::HostFile(src.to_path_buf())));
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let path = self.parent_of(path);
        self.entries
            .push((path, 0o120777, Contents::Symlink(target.to_string())));
        self
    }

    /// Writes the archive (uncompressed: the kernel unpacks it fastest and it is rebuilt often).
    pub fn write(&self, out: &Path) -> Result<()> {
        let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut w = BufWriter::new(file);
        for (ino, (path, mode, contents)) in self.entries.iter().enumerate() {
            let header = NewcBuilder::new(path).ino(ino as u32 + 1).mode(*mode);
            w = match contents {
                Contents::Dir => header.nlink(2).write(w, 0).finish()?,
                Contents::Bytes(data) => write_data(header, w, data)?,
                Contents::Symlink(target) => write_data(header, w, target.as_bytes())?,
                Contents::HostFile(src) => {
                    let mut f = File::open(src)
                        .with_context(|| format!("cannot read {}", src.display()))?;
                    let len = u32::try_from(f.metadata()?.len())
                        .with_context(|| format!("{} is over 4 GiB", src.display()))?;
                    let mut fw = header.write(w, len);
                    io::copy(&mut f, &mut fw)?;
                    fw.finish()?
                }
            };
        }
        cpio::newc::trailer(w)?.flush()?;
        Ok(())
    }
}

fn write_data<W: Write>(header: NewcBuilder, w: W, data: &[u8]) -> io::Result<W> {
    let mut fw = header.write(w, data.len() as u32);
    fw.write_all(data)?;
    fw.finish()
}

/// Builds the VM initramfs at `out`: busybox with every applet linked, the mount points /init
/// uses, /init and /demo.sh, and `bins` as `(guest path, host file)` pairs.
pub fn build(out: &Path, bins: &[(&str, &Path)]) -> Result<()> {
    let busybox = Path::new(HOST_BUSYBOX);
    // The plain `busybox` package installs a dynamic binary at the same path: it would not run
    // in a guest without libc.
    if !busybox.exists() || !sysdeps::is_installed("busybox-static") {
        bail!("{HOST_BUSYBOX} is missing or not static: run `apt-get install -y busybox-static`");
    }

    let mut fs = Initramfs::new();
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "mnt",
        "root",
        "sys/fs/cgroup",
    ] {
        fs.dir(dir);
    }
    fs.host_file("bin/busybox", 0o755, busybox);
    // Link every applet now rather than `busybox --install` at boot: that needs /proc first
    // and costs boot time under TCG.
    let applets = cmd::output(Command::new(busybox).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "bin/busybox" {
            fs.symlink(applet, "/bin/busybox");
        }
    }
    fs.bytes("init", 0o755, INIT.as_bytes());
    fs.bytes("demo.sh", 0o755, DEMO.as_bytes());
    fs.bytes("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    fs.bytes("etc/group", 0o644, b"root:x:0:\n");
    for (guest, host) in bins {
        if !host.is_file() {
            bail!(
                "guest binary {} does not exist (build-guest first)",
                host.display()
            );
        }
        fs.host_file(guest, 0o755, host);
    }
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    fs.write(out)
}
