//! What one engine hands the next so that engine creation pays only for
//! the kernels that changed. Only data crosses versions (each version is a
//! new library with its own device), in two snapshot sections:
//!
//! - `cache/vulkan/pipeline-cache`: the `VkPipelineCache` data
//!   (`vkGetPipelineCacheData`), a `u8` tensor, with
//!   `cache/vulkan/pipeline-cache-key`: the device identity (vendor, device,
//!   driver version, pipeline-cache UUID) and the blob's hash. The new engine
//!   seeds its pipeline cache with it only when both match, so a blob from
//!   another device or driver, or a damaged one, never reaches the driver
//!   (drivers also check the header; not all survive bad data). A driver
//!   with a real cache then creates unchanged pipelines from it. Lavapipe
//!   (Mesa 22.3) keeps nothing in it: its blob is the header alone.
//! - `cache/vulkan/known-pipelines`: the device identity, then the hash of
//!   every kernel whose pipelines that device created (SPIR-V, entry points
//!   and binding count: all that pipeline creation reads). A kernel of the
//!   new engine with a hash in the list is known to build on this device and
//!   its pipelines are created at its first call; every other kernel (new or
//!   changed) is created eagerly, so its errors and its cost belong to the
//!   swap. The list only decides *when* a pipeline is created, always from
//!   the new version's own SPIR-V, so a stale or forged list can never make
//!   a call run other code.

use std::collections::BTreeSet;

use shared_state::{Scalar, Section, Snapshot, Tensor};

use crate::shaders::Shader;
use shared_state::KernelDecl;

pub const BLOB_SECTION: &str = "cache/vulkan/pipeline-cache";
pub const BLOB_KEY_SECTION: &str = "cache/vulkan/pipeline-cache-key";
pub const KNOWN_SECTION: &str = "cache/vulkan/known-pipelines";

/// What the previous engine handed over, already checked against this
/// device: `blob` only if it was made by this device and driver and is
/// intact, `known` only if the list was made on this device and driver.
#[derive(Default, Debug)]
pub struct Handoff {
    pub blob: Option<Vec<u8>>,
    pub known: BTreeSet<u64>,
}

impl Handoff {
    /// Takes the cache sections out of `snapshot` (always, valid or not, so
    /// they are never reported as dropped state) and keeps what is valid
    /// for `identity`.
    pub fn take_from(snapshot: &mut Snapshot, identity: &str) -> Handoff {
        let blob = snapshot.take_tensor(BLOB_SECTION);
        let blob_key = text(snapshot.take(BLOB_KEY_SECTION));
        let known = text(snapshot.take(KNOWN_SECTION));
        let mut handoff = Handoff::default();
        if let (Some(blob), Some(key)) = (blob, blob_key) {
            if let Some(bytes) = blob.as_slice::<u8>() {
                if key == blob_key_line(identity, bytes) {
                    handoff.blob = Some(bytes.to_vec());
                }
            }
        }
        if let Some(list) = known {
            let mut lines = list.lines();
            if lines.next() == Some(identity) {
                handoff.known = lines
                    .map(|l| u64::from_str_radix(l, 16))
                    .collect::<Result<_, _>>()
                    .unwrap_or_default();
            }
        }
        handoff
    }
}

fn text(section: Option<Section>) -> Option<String> {
    match section {
        Some(Section::Scalar(Scalar::Text(t))) => Some(t),
        _ => None,
    }
}

fn blob_key_line(identity: &str, blob: &[u8]) -> String {
    format!(
        "{identity} len={} hash={:016x}",
        blob.len(),
        fnv1a(blob.iter().copied())
    )
}

/// Writes the handoff sections into `snapshot`.
pub fn insert(snapshot: &mut Snapshot, identity: &str, blob: Vec<u8>, known: &BTreeSet<u64>) {
    snapshot.insert_scalar(
        BLOB_KEY_SECTION,
        Scalar::Text(blob_key_line(identity, &blob)),
    );
    let len = blob.len();
    snapshot.insert_tensor(BLOB_SECTION, Tensor::from_vec(&[len], blob));
    let mut list = identity.to_string();
    for hash in known {
        list.push_str(&format!("\n{hash:016x}"));
    }
    snapshot.insert_scalar(KNOWN_SECTION, Scalar::Text(list));
}

/// The hash of everything pipeline creation reads for a kernel: its SPIR-V,
/// its passes' entry points, its storage binding count.
pub fn kernel_hash(decl: &KernelDecl, shader: &Shader) -> u64 {
    let words = shader.words.iter().flat_map(|w| w.to_le_bytes());
    let entries = decl
        .launch
        .passes
        .iter()
        .flat_map(|p| p.entry.bytes().chain([0]));
    let bindings = (shader.layout.storage.len() as u64).to_le_bytes();
    fnv1a(words.chain([0xff]).chain(entries).chain(bindings))
}

/// 64-bit FNV-1a: stable across builds and versions (unlike std's hasher).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
