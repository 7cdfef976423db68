//! `cargo xtask image`: the agent's container image, `FROM scratch` with the static `enforcer`
//! binary, written offline as an OCI archive (`target/image/enforcer-<version>.oci.tar`) that
//! `ctr images import`, `podman load` and `skopeo` read. No registry is reachable here and no
//! image builder is needed: the layout is a handful of JSON files and one gzip layer.
//!
//! Reproducible: fixed mtimes, owners and modes, gzip without a timestamp, and no `created` date,
//! so the same binary always gives the same digests.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, GzBuilder, read::GzDecoder};
use oci_spec::image::{
    ANNOTATION_REF_NAME, ANNOTATION_VERSION, Arch, ConfigBuilder, Descriptor, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder, SCHEMA_VERSION, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

use crate::{cmd, sysdeps, toolchain, workspace_root};

/// The annotation containerd's `ctr images import` names the image by.
const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// Where the binary sits in the image, and the entrypoint.
const BINARY: &str = "enforcer";
/// Every file's mtime in the archives (the epoch: nothing depends on it).
const MTIME: u64 = 0;

/// What an archive holds, as read back from it.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// The full image name (`docker.io/library/enforcer:<version>`), which is what a kubelet asks
    /// for when a manifest says `enforcer:<version>`.
    pub name: String,
    pub manifest_digest: String,
    pub entrypoint: Vec<String>,
    /// The binary's bytes, from the layer.
    pub binary_len: u64,
}

/// The full name of the image for `version`, as CRI runtimes normalise `enforcer:<version>`.
pub fn image_name(version: &str) -> String {
    format!("docker.io/library/enforcer:{version}")
}

/// Builds the shipped static binary (release, default features: what a user runs), writes its
/// archive and checks it (see [`write()`] and [`check()`]); returns the archive's path.
pub fn build(version: &str) -> Result<PathBuf> {
    let archive = write(&build_static_enforcer()?, version, "target/image")?;
    check(&archive, false)?;
    Ok(archive)
}

/// Writes `<dir>/enforcer-<version>.oci.tar` (`dir` relative to the workspace) holding `binary`
/// (a static enforcer), read back once to check it; returns its path.
pub fn write(binary: &Path, version: &str, dir: &str) -> Result<PathBuf> {
    let bytes = fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let out = workspace_root().join(format!("{dir}/enforcer-{version}.oci.tar"));
    fs::create_dir_all(out.parent().expect("has a parent"))?;
    let archive = write_archive(&bytes, version)?;
    fs::write(&out, &archive).with_context(|| format!("cannot write {}", out.display()))?;
    let summary = read_archive(&archive)?;
    ensure!(
        summary.binary_len == bytes.len() as u64,
        "the layer lost part of the binary"
    );
    eprintln!(
        "image {} ({}), manifest {}",
        summary.name,
        out.display(),
        summary.manifest_digest
    );
    Ok(out)
}

/// Has a real image tool read the archive: Debian's `skopeo` (installed first when `install`
/// and we are root), which parses the layout as `podman load` does and checks every blob's
/// digest while copying it out. Without skopeo it says so and passes: [`write()`] has read the
/// archive back already.
pub fn check(archive: &Path, install: bool) -> Result<()> {
    if install {
        sysdeps::ensure_packages(&["skopeo"])?;
    }
    if check_with_skopeo(archive)? {
        eprintln!("skopeo read the archive and copied every blob");
    } else {
        eprintln!("skopeo is not installed: the archive was only checked by reading it back");
    }
    Ok(())
}

/// `cargo build --release -p enforcer` linked statically (`+crt-static`, as the VM's binaries),
/// in the guest target dir so the VM build and this one share their artifacts.
fn build_static_enforcer() -> Result<PathBuf> {
    let mut c = toolchain::cargo()?;
    c.args(["build", "--release", "-p", "enforcer", "--bin", BINARY])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(workspace_root().join("target/guest"))
        .arg("--message-format=json-render-diagnostics")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::piped());
    let shown = cmd::display(&c);
    eprintln!("$ {shown}");
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let mut executable = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == BINARY {
            executable = msg["executable"].as_str().map(PathBuf::from);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status}): see the compiler output above");
    }
    executable.context("cargo built no `enforcer` executable")
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// JSON with sorted keys: oci-spec keeps labels and annotations in `HashMap`s, whose order
/// changes from run to run, and a digest must not.
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.into_iter().map(|(k, v)| (k, sorted(v))).collect()
            }
            serde_json::Value::Array(items) => items.into_iter().map(sorted).collect(),
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sorted(serde_json::to_value(value)?))?)
}

fn descriptor(media_type: MediaType, blob: &[u8]) -> Result<Descriptor> {
    let digest = Sha256Digest::from_str(&sha256_hex(blob))?;
    Ok(Descriptor::new(media_type, blob.len() as u64, digest))
}

/// A tar header with the fixed owner, mode and mtime.
fn header(len: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(len);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> Result<()> {
    let kind = if path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    };
    let mut header = header(data.len() as u64, mode, kind);
    builder.append_data(&mut header, path, data)?;
    Ok(())
}

/// The image's only layer: the binary at `/enforcer`, as an uncompressed tar.
fn layer_tar(binary: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, BINARY, 0o755, binary)?;
    Ok(builder.into_inner()?)
}

/// The OCI archive (a tar of an OCI image layout) of the image holding `binary`.
pub fn write_archive(binary: &[u8], version: &str) -> Result<Vec<u8>> {
    let layer = layer_tar(binary)?;
    let mut gzip = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gzip.write_all(&layer)?;
    let layer_gz = gzip.finish()?;

    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .entrypoint(vec![format!("/{BINARY}")])
                .labels(HashMap::from([(
                    ANNOTATION_VERSION.to_owned(),
                    version.to_owned(),
                )]))
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{}", sha256_hex(&layer))])
                .build()?,
        )
        .build()?;
    let config_json = canonical_json(&config)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_json)?)
        .layers(vec![descriptor(MediaType::ImageLayerGzip, &layer_gz)?])
        .build()?;
    let manifest_json = canonical_json(&manifest)?;

    let name = image_name(version);
    let mut manifest_descriptor = descriptor(MediaType::ImageManifest, &manifest_json)?;
    manifest_descriptor.set_annotations(Some(
        [
            // podman and skopeo name the image by this; containerd by its own key.
            (ANNOTATION_REF_NAME.to_owned(), name.clone()),
            (CONTAINERD_IMAGE_NAME.to_owned(), name),
        ]
        .into(),
    ));
    manifest_descriptor.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .build()?,
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;

    let mut archive = tar::Builder::new(Vec::new());
    append(&mut archive, "oci-layout", 0o644, &canonical_json(&layout)?)?;
    append(&mut archive, "index.json", 0o644, &canonical_json(&index)?)?;
    append(&mut archive, "blobs/", 0o755, &[])?;
    append(&mut archive, "blobs/sha256/", 0o755, &[])?;
    for blob in [&manifest_json, &config_json, &layer_gz] {
        append(
            &mut archive,
            &format!("blobs/sha256/{}", sha256_hex(blob)),
            0o644,
            blob,
        )?;
    }
    Ok(archive.into_inner()?)
}

/// Reads an archive back, checking every digest and size on the way (what an importer does).
pub fn read_archive(archive: &[u8]) -> Result<ImageSummary> {
    let mut files = std::collections::BTreeMap::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.insert(path, data);
    }
    let file = |path: &str| {
        files
            .get(path)
            .with_context(|| format!("no {path} in the archive"))
    };
    let layout: serde_json::Value = serde_json::from_slice(file("oci-layout")?)?;
    ensure!(
        layout["imageLayoutVersion"] == "1.0.0",
        "oci-layout: {layout}"
    );
    let blob = |descriptor: &Descriptor| -> Result<&Vec<u8>> {
        let hex = descriptor
            .as_digest_sha256()
            .context("a digest that is not sha256")?;
        let data = file(&format!("blobs/sha256/{hex}"))?;
        ensure!(
            sha256_hex(data) == hex,
            "blob {hex} does not match its digest"
        );
        ensure!(
            data.len() as u64 == descriptor.size(),
            "blob {hex} has the wrong size"
        );
        Ok(data)
    };

    let index = ImageIndex::from_reader(file("index.json")?.as_slice())?;
    let [manifest_descriptor] = index.manifests().as_slice() else {
        bail!(
            "index.json lists {} manifests, not one",
            index.manifests().len()
        );
    };
    let annotations = manifest_descriptor
        .annotations()
        .clone()
        .unwrap_or_default();
    let name = annotations
        .get(ANNOTATION_REF_NAME)
        .context("no ref.name annotation")?;
    ensure!(
        annotations.get(CONTAINERD_IMAGE_NAME) == Some(name),
        "image names differ"
    );
    let manifest = ImageManifest::from_reader(blob(manifest_descriptor)?.as_slice())?;
    let config = ImageConfiguration::from_reader(blob(manifest.config())?.as_slice())?;
    let [layer] = manifest.layers().as_slice() else {
        bail!(
            "the manifest has {} layers, not one",
            manifest.layers().len()
        );
    };
    ensure!(
        *layer.media_type() == MediaType::ImageLayerGzip,
        "layer is not tar+gzip"
    );
    let mut tar = Vec::new();
    GzDecoder::new(blob(layer)?.as_slice()).read_to_end(&mut tar)?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    ensure!(
        config.rootfs().diff_ids() == &[diff_id],
        "diff_id does not match the layer"
    );
    let mut binary_len = None;
    for entry in tar::Archive::new(tar.as_slice()).entries()? {
        let entry = entry?;
        if entry.path()?.as_os_str() == BINARY {
            ensure!(
                entry.header().mode()? == 0o755,
                "/{BINARY} is not executable"
            );
            binary_len = Some(entry.size());
        }
    }
    Ok(ImageSummary {
        name: name.clone(),
        manifest_digest: manifest_descriptor.digest().to_string(),
        entrypoint: config
            .config()
            .as_ref()
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default(),
        binary_len: binary_len.with_context(|| format!("no /{BINARY} in the layer"))?,
    })
}

/// Has `skopeo` (Debian's, if installed) read the archive and copy it out, which checks the
/// layout and every digest the way `podman load` does. `Ok(false)` when skopeo is absent.
fn check_with_skopeo(archive: &Path) -> Result<bool> {
    if Command::new("skopeo").arg("--version").output().is_err() {
        return Ok(false);
    }
    let source = format!("oci-archive:{}", archive.display());
    let inspect = cmd::output(Command::new("skopeo").args(["inspect", "--raw", &source]))?;
    ensure!(
        inspect.contains("application/vnd.oci.image.manifest.v1+json"),
        "skopeo: {inspect}"
    );
    let dir = archive.with_extension("skopeo-check");
    let _ = fs::remove_dir_all(&dir);
    let dest = format!("dir:{}", dir.display());
    cmd::run(Command::new("skopeo").args(["copy", "--quiet", &source, &dest]))?;
    let config = cmd::output(Command::new("skopeo").args(["inspect", "--config", &source]))?;
    ensure!(
        config.contains("\"/enforcer\""),
        "skopeo sees no /enforcer entrypoint: {config}"
    );
    fs::remove_dir_all(&dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_reads_back_with_matching_digests_and_is_reproducible() {
        let binary = b"\x7fELF not really, but bytes".repeat(1000);
        let archive = write_archive(&binary, "9.8.7").expect("archive");
        let summary = read_archive(&archive).expect("read back");
        assert_eq!(summary.name, "docker.io/library/enforcer:9.8.7");
        assert_eq!(summary.entrypoint, ["/enforcer"]);
        assert_eq!(summary.binary_len, binary.len() as u64);
        let again = write_archive(&binary, "9.8.7").expect("again");
        let first_difference = again.iter().zip(&archive).position(|(a, b)| a != b);
        assert_eq!(
            first_difference,
            None,
            "{}",
            String::from_utf8_lossy(&again)
        );
    }

    #[test]
    fn a_corrupted_blob_is_refused() {
        let archive = write_archive(b"binary", "1.0.0").expect("archive");
        // The same archive with one byte of its layer flipped.
        let mut entries: Vec<(String, Vec<u8>)> = tar::Archive::new(archive.as_slice())
            .entries()
            .expect("entries")
            .map(|entry| {
                let mut entry = entry.expect("entry");
                let path = entry.path().expect("path").to_string_lossy().into_owned();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("data");
                (path, data)
            })
            .collect();
        let layer = entries
            .iter_mut()
            .find(|(_, data)| data.starts_with(&[0x1f, 0x8b]))
            .expect("the gzip layer");
        let last = layer.1.len() - 1;
        layer.1[last] ^= 0xff;
        let mut bad = tar::Builder::new(Vec::new());
        for (path, data) in &entries {
            append(&mut bad, path, 0o644, data).expect("append");
        }
        let err = read_archive(&bad.into_inner().expect("tar")).expect_err("corrupt");
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err:#}"
        );
    }
}
