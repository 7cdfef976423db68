//! Which BPF object this process loads and which map ABI it uses: the [`Bpf`] value every
//! command is handed, the build identity that tells two objects apart, and the loading of an
//! object onto the pinned maps.
use std::sync::OnceLock;

use aya::{Btf, Ebpf, EbpfLoader};
use enforcer_common::{ABI_VERSION, KernelLayout};

use super::{LoaderError, map_names, pins::Pins};

/// The BPF object built by build.rs from the `enforcer-ebpf` crate.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-bpf"));

/// The BPF object this process loads, the map ABI version it uses (the name of its pin
/// directory), and the build identity of that object. Made once in `main`: the shipped build is
/// [`Bpf::shipped`]; VM tests (feature `testing`) load another object or pretend another ABI.
#[derive(Clone, Copy, Debug)]
pub struct Bpf {
    object: &'static [u8],
    abi: u32,
    build: u64,
}

impl Bpf {
    /// The embedded object and this build's ABI.
    pub fn shipped() -> Self {
        Self::with_object(BPF_OBJECT)
    }

    fn with_object(object: &'static [u8]) -> Self {
        Self {
            object,
            abi: ABI_VERSION,
            build: build_id(object),
        }
    }

    pub(super) fn object(&self) -> &'static [u8] {
        self.object
    }

    /// The map ABI version this process uses (and the name of its pin directory).
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// This process's build (see [`build_id`]).
    pub fn build(&self) -> u64 {
        self.build
    }

    /// This process's pins.
    pub(super) fn pins(&self) -> Pins {
        Pins::of(self.abi)
    }

    /// VM tests only (hidden `--bpf-object FILE`): load the programs from a BPF object file
    /// instead of the embedded one, so that one binary can act as a second build (`cargo xtask
    /// test` builds one whose `capable` program differs).
    #[cfg(feature = "testing")]
    pub fn from_object_file(path: &std::path::Path) -> Result<Self, LoaderError> {
        /// The ELF parser reads the object in place and wants it aligned, as the embedded one is.
        #[repr(C, align(32))]
        #[derive(Clone, Copy)]
        struct Chunk([u8; 32]);
        let bytes = std::fs::read(path)
            .map_err(|err| LoaderError::io(format!("cannot read {}", path.display()), err))?;
        let mut chunks = vec![Chunk([0; 32]); bytes.len().div_ceil(32)].into_boxed_slice();
        // SAFETY: the chunks span at least `bytes.len()` initialised bytes; u8 needs no alignment.
        unsafe { std::slice::from_raw_parts_mut(chunks.as_mut_ptr().cast::<u8>(), bytes.len()) }
            .copy_from_slice(&bytes);
        let chunks: &'static [Chunk] = Box::leak(chunks);
        // SAFETY: as above, over the leaked allocation, which lives as long as the process.
        let object =
            unsafe { std::slice::from_raw_parts(chunks.as_ptr().cast::<u8>(), bytes.len()) };
        Ok(Self::with_object(object))
    }

    /// VM tests only (hidden `--test-abi N`, N = ABI_VERSION + 1): act as the next map ABI, so
    /// the pins of this build's real ABI are an older one to migrate. The maps keep this build's
    /// types; the pin directory and the migration path are the real ones.
    #[cfg(feature = "testing")]
    pub fn pretending_abi(self, version: u32) -> Result<Self, LoaderError> {
        if version != ABI_VERSION + 1 {
            return Err(LoaderError::io(
                format!("--test-abi {version}"),
                std::io::Error::other(format!(
                    "only the next ABI version, {}, can be pretended",
                    ABI_VERSION + 1
                )),
            ));
        }
        Ok(Self {
            abi: version,
            ..self
        })
    }
}

/// The identity of a build's programs: 64-bit FNV-1a over the BPF object, taken as
/// little-endian 8-byte words (the last one zero-padded), then over its length. Any change to
/// any program changes the object, and so the hash; a rebuild that changes only the debug
/// information changes it too, which costs one needless (gapless) replacement. Never 0, which
/// the `BUILD` map holds when it says nothing.
pub fn build_id(object: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut chunks = object.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash ^ word).wrapping_mul(PRIME);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    hash = (hash ^ u64::from_le_bytes(last)).wrapping_mul(PRIME);
    hash = (hash ^ object.len() as u64).wrapping_mul(PRIME);
    hash.max(1)
}

/// How a build is named in messages.
pub(super) fn build_name(build: Option<u64>) -> String {
    match build {
        Some(build) => format!("build {build:016x}"),
        None => "a build that recorded no identity".to_owned(),
    }
}

/// Parses the BPF object with every shared map bound to its pin under `pins`: a pinned map is
/// reused as it is (with its contents), a missing one is created and pinned.
pub(super) fn load_object(bpf: &Bpf, pins: &Pins, btf: &Btf) -> Result<Ebpf, LoaderError> {
    let mut loader = EbpfLoader::new();
    loader.btf(Some(btf));
    loader.override_global("LAYOUT", kernel_layout()?, true);
    for name in map_names::MAPS.into_iter().chain(map_names::SHARED) {
        loader.map_pin_path(name, pins.map(name));
    }
    loader
        .load(bpf.object())
        .map_err(|err| LoaderError::bpf("cannot load the BPF object", err))
}

/// Parses the BPF object on throwaway maps of its own (nothing is pinned).
pub(super) fn load_unpinned(bpf: &Bpf, btf: &Btf) -> Result<Ebpf, LoaderError> {
    EbpfLoader::new()
        .btf(Some(btf))
        .override_global("LAYOUT", kernel_layout()?, true)
        .load(bpf.object())
        .map_err(|err| LoaderError::bpf("cannot load the BPF object", err))
}

/// The running kernel's field offsets, read once per process: they are the kernel's, whichever
/// object is loaded.
fn kernel_layout() -> Result<&'static KernelLayout, LoaderError> {
    static LAYOUT: OnceLock<KernelLayout> = OnceLock::new();
    if let Some(layout) = LAYOUT.get() {
        return Ok(layout);
    }
    let layout = crate::kernel_layout::from_sys_fs()?;
    Ok(LAYOUT.get_or_init(|| layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_tell_objects_apart() {
        let object: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let id = build_id(&object);
        assert_eq!(id, build_id(&object.clone()), "deterministic");
        let mut changed = object.clone();
        changed[997] ^= 1;
        assert_ne!(build_id(&changed), id, "a byte in the padded tail");
        changed = object.clone();
        changed[8] ^= 0x80;
        assert_ne!(build_id(&changed), id);
        // Zero padding does not make a shorter object equal to a longer one.
        let mut longer = object.clone();
        longer.push(0);
        assert_ne!(build_id(&longer), id);
        assert_ne!(build_id(&[]), 0);
    }
}
