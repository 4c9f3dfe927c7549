//! The state snapshot: how an engine's state moves from one version of a
//! module to the next.
//!
//! A snapshot is data, not a Rust struct of the engine: a format version and
//! named sections, each a typed tensor or a scalar. A new version takes the
//! sections it knows (moving the buffers, no copy) and the rest are reported
//! as dropped. The host can also write a snapshot to disk (see the harness'
//! `snapshot_file` module) to carry state across a restart of the host.

use std::collections::BTreeMap;
use std::fmt;

use crate::device_section::DeviceSection;
use crate::tensor::Tensor;

/// Version of the snapshot layout (sections and their kinds).
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Sections named under this prefix hold caches an engine rebuilds from its
/// code (compiled pipelines, PTX): handed over to save time, but not state.
/// The host leaves them out of a state's hash, so that an engine that has
/// not yet compiled every kernel still has "the same state" as one that has.
pub const CACHE_SECTION_PREFIX: &str = "cache/";

/// A scalar value: a kernel parameter, a counter, a tuning knob or a note.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    I64(i64),
    F64(f64),
    Bool(bool),
    Text(String),
}

impl Scalar {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::F64(v) => Some(v),
            Scalar::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::I64(v) => Some(v),
            Scalar::F64(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(v as i64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Scalar::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::I64(_) => "i64",
            Scalar::F64(_) => "f64",
            Scalar::Bool(_) => "bool",
            Scalar::Text(_) => "text",
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::I64(v) => write!(f, "{v}"),
            Scalar::F64(v) => write!(f, "{v}"),
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// One named piece of state.
#[derive(Clone, Debug, PartialEq)]
pub enum Section {
    Tensor(Tensor),
    Scalar(Scalar),
}

impl Section {
    pub fn byte_len(&self) -> usize {
        match self {
            Section::Tensor(t) => t.byte_len(),
            Section::Scalar(Scalar::Text(s)) => s.len(),
            Section::Scalar(_) => 8,
        }
    }
}

/// A versioned, self-describing snapshot of an engine's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`] of whoever made it.
    pub format: u32,
    /// The module that exported it (`kernel-cpu`).
    pub module: String,
    /// The backend it came from (`cpu`, `vulkan`, `cuda`).
    pub backend: String,
    sections: BTreeMap<String, Section>,
    /// Sections left on the device ([`crate::Engine::export_handoff`]):
    /// not among [`Snapshot::sections`], so never written or hashed.
    device: BTreeMap<String, DeviceSection>,
    taken: Vec<String>,
}

impl Snapshot {
    /// Whether section `name` is a cache ([`CACHE_SECTION_PREFIX`]).
    pub fn is_cache_section(name: &str) -> bool {
        name.starts_with(CACHE_SECTION_PREFIX)
    }

    pub fn new(module: &str, backend: &str) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            module: module.to_string(),
            backend: backend.to_string(),
            sections: BTreeMap::new(),
            device: BTreeMap::new(),
            taken: Vec::new(),
        }
    }

    pub fn insert(&mut self, name: impl Into<String>, section: Section) {
        self.sections.insert(name.into(), section);
    }

    pub fn insert_tensor(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.insert(name, Section::Tensor(tensor));
    }

    pub fn insert_scalar(&mut self, name: impl Into<String>, scalar: Scalar) {
        self.insert(name, Section::Scalar(scalar));
    }

    pub fn get(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// Moves a section out, recording that it was taken (restored).
    pub fn take(&mut self, name: &str) -> Option<Section> {
        let section = self.sections.remove(name)?;
        self.taken.push(name.to_string());
        Some(section)
    }

    /// Moves a tensor section out. A section of that name that is not a
    /// tensor is left in place (and so reported as dropped).
    pub fn take_tensor(&mut self, name: &str) -> Option<Tensor> {
        match self.sections.get(name) {
            Some(Section::Tensor(_)) => match self.take(name) {
                Some(Section::Tensor(t)) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    /// Moves a scalar section out (see [`Snapshot::take_tensor`]).
    pub fn take_scalar(&mut self, name: &str) -> Option<Scalar> {
        match self.sections.get(name) {
            Some(Section::Scalar(_)) => match self.take(name) {
                Some(Section::Scalar(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// Takes every tensor whose name starts with `prefix`, returning
    /// `(name without prefix, tensor)`.
    pub fn take_tensors_with_prefix(&mut self, prefix: &str) -> Vec<(String, Tensor)> {
        let names: Vec<String> = self
            .sections
            .iter()
            .filter(|(n, s)| n.starts_with(prefix) && matches!(s, Section::Tensor(_)))
            .map(|(n, _)| n.clone())
            .collect();
        names
            .into_iter()
            .filter_map(|n| {
                let t = self.take_tensor(&n)?;
                Some((n[prefix.len()..].to_string(), t))
            })
            .collect()
    }

    /// Adds a section left on the device (see [`DeviceSection`]).
    pub fn insert_device(&mut self, name: impl Into<String>, section: DeviceSection) {
        self.device.insert(name.into(), section);
    }

    /// Moves out every device section whose name starts with `prefix`,
    /// recording them as taken: `(name without prefix, section)`.
    pub fn take_device_with_prefix(&mut self, prefix: &str) -> Vec<(String, DeviceSection)> {
        let names: Vec<String> = self
            .device
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|n| {
                let section = self.device.remove(&n)?;
                self.taken.push(n.clone());
                Some((n[prefix.len()..].to_string(), section))
            })
            .collect()
    }

    /// Sections still on the device, in name order.
    pub fn device_sections(&self) -> impl Iterator<Item = (&str, &DeviceSection)> {
        self.device.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Whether any section is still on the device: such a snapshot only
    /// goes to the next version of the same module, never to a file.
    pub fn has_device_sections(&self) -> bool {
        !self.device.is_empty()
    }

    /// Sections still present (not those on the device), in name order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.sections.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Names of every section still present, those on the device too.
    pub fn section_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.sections.keys().cloned().collect();
        names.extend(self.device.keys().cloned());
        names.sort();
        names
    }

    /// Names taken so far with [`Snapshot::take`] and friends.
    pub fn taken_names(&self) -> &[String] {
        &self.taken
    }

    pub fn len(&self) -> usize {
        self.sections.len() + self.device.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.is_empty() && self.device.is_empty()
    }

    /// Total payload bytes (tensor data, scalars count 8 bytes, device
    /// sections their data's bytes, which stay on the device).
    pub fn byte_len(&self) -> usize {
        self.sections.values().map(Section::byte_len).sum::<usize>()
            + self
                .device
                .values()
                .map(|d| d.bytes as usize)
                .sum::<usize>()
    }

    /// Same sections with the same bytes (tensors compared bit for bit).
    pub fn bit_eq(&self, other: &Snapshot) -> bool {
        self.device == other.device
            && self.sections.len() == other.sections.len()
            && self
                .sections
                .iter()
                .zip(other.sections.iter())
                .all(|((na, a), (nb, b))| {
                    na == nb
                        && match (a, b) {
                            (Section::Tensor(x), Section::Tensor(y)) => x.bit_eq(y),
                            (Section::Scalar(Scalar::F64(x)), Section::Scalar(Scalar::F64(y))) => {
                                x.to_bits() == y.to_bits()
                            }
                            (x, y) => x == y,
                        }
                })
    }
}

/// What a new engine made of the snapshot it was created from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Sections the new engine took over.
    pub restored: Vec<String>,
    /// State the new engine expected but did not find, set to a default.
    pub defaulted: Vec<String>,
    /// Sections in the snapshot the new engine does not know: not used.
    pub dropped: Vec<String>,
    /// Bytes of tensor and scalar data that were moved in.
    pub bytes: usize,
}

impl ImportReport {
    pub fn is_lossless(&self) -> bool {
        self.dropped.is_empty() && self.defaulted.is_empty()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.restored.len() {
            1 => write!(f, "restored 1 section")?,
            n => write!(f, "restored {n} sections")?,
        }
        if !self.defaulted.is_empty() {
            write!(f, ", defaulted [{}]", self.defaulted.join(", "))?;
        }
        if !self.dropped.is_empty() {
            write!(
                f,
                ", dropped (unknown to this version) [{}]",
                self.dropped.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_records_what_was_restored_and_leaves_the_rest() {
        let mut s = Snapshot::new("m", "cpu");
        s.insert_tensor("resident/a", Tensor::from_f32(&[2], vec![1.0, 2.0]));
        s.insert_tensor("resident/b", Tensor::from_f32(&[1], vec![3.0]));
        s.insert_scalar("tuning/tile", Scalar::I64(64));
        s.insert_scalar("mystery", Scalar::Bool(true));
        assert_eq!(s.byte_len(), 12 + 8 + 8);
        let res = s.take_tensors_with_prefix("resident/");
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].0, "a");
        assert_eq!(s.take_scalar("tuning/tile"), Some(Scalar::I64(64)));
        // wrong kind: stays in place
        assert!(s.take_tensor("mystery").is_none());
        assert_eq!(s.taken_names(), ["resident/a", "resident/b", "tuning/tile"]);
        assert_eq!(s.section_names(), ["mystery"]);
    }

    #[test]
    fn bit_eq_sees_a_single_flipped_bit() {
        let mut a = Snapshot::new("m", "cpu");
        a.insert_tensor("x", Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]));
        let mut b = a.clone();
        assert!(a.bit_eq(&b));
        if let Some(Section::Tensor(t)) = b.sections.get_mut("x") {
            t.data_mut().as_bytes_mut()[5] ^= 1;
        }
        assert!(!a.bit_eq(&b));
    }
}
