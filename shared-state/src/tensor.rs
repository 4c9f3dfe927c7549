//! Typed buffers with a shape: the unit of data that crosses the boundary.

use std::fmt;

pub use half::{bf16, f16};

/// Element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U32,
    U8,
    /// IEEE 754 half precision (`half::f16`).
    F16,
    /// bfloat16: f32's exponent, 7 mantissa bits (`half::bf16`).
    BF16,
    I8,
}

impl DType {
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F64,
        DType::I32,
        DType::I64,
        DType::U32,
        DType::U8,
        DType::F16,
        DType::BF16,
        DType::I8,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::I8 => 1,
        }
    }

    /// The lower-case name used in files and messages (`f32`, `i64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U32 => "u32",
            DType::U8 => "u8",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Elements shared by every holder until one writes: cloning shares them
/// (a reference count, no copy of the bytes), reading goes through
/// [`Deref`](std::ops::Deref) to `[T]`, and writing through
/// [`DerefMut`](std::ops::DerefMut) first gives the writer its own copy if
/// anyone else still holds them, or if they are mapped read-only (copy on
/// write). So an engine's state handed to the next version as a
/// [`crate::Snapshot`] moves no bytes, and the new version writing a
/// handed-over buffer leaves the old version's unchanged.
///
/// The elements live in a `Vec` of `Pod` elements, or in a read-only
/// mapping of a sealed checkpoint ([`crate::mapped::Mapping`]: a restarted
/// engine serves its state from there without copying it). What is shared
/// is plain data: a reference count and either, freed by whichever holder
/// drops it last with this crate's code (the `Vec`'s own allocator, the
/// system allocator every module and the host use; `munmap`): no trait
/// object, closure or function pointer of a module rides along, so a
/// module's library can be closed while the buffers it made live on in the
/// next version (ARCHITECTURE.md, invariant 7).
pub struct Shared<T>(std::sync::Arc<Elements<T>>);

/// Where a [`Shared`]'s elements live.
enum Elements<T> {
    Owned(Vec<T>),
    /// `len` elements at byte `offset` of a sealed read-only mapping, the
    /// offset aligned for `T` (checked by [`Buffer::mapped`], the only
    /// constructor, which also only makes them of `Pod` types).
    Mapped {
        mapping: std::sync::Arc<crate::mapped::Mapping>,
        offset: usize,
        len: usize,
    },
}

impl<T> Elements<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Elements::Owned(v) => v,
            Elements::Mapped {
                mapping,
                offset,
                len,
            } => {
                let bytes = &mapping.bytes()[*offset..];
                // SAFETY: `Buffer::mapped` checked that `len` elements of
                // `T` fit in the mapping after `offset`, that the address is
                // aligned for `T`, and that `T` is `Pod` (every bit pattern
                // valid); the mapping is sealed and lives as long as `self`.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), *len) }
            }
        }
    }
}

impl<T: Clone> Clone for Elements<T> {
    /// An owned copy (of mapped elements too: the writer's own).
    fn clone(&self) -> Self {
        Elements::Owned(self.as_slice().to_vec())
    }
}

impl<T> Shared<T> {
    /// Whether another holder shares these elements (a write would copy).
    pub fn is_shared(&self) -> bool {
        std::sync::Arc::strong_count(&self.0) > 1
    }

    /// Whether the elements live in a read-only mapping (a write would
    /// copy them first).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.0, Elements::Mapped { .. })
    }

    /// Whether `self` and `other` are the same elements (not merely equal).
    pub fn same_as(&self, other: &Shared<T>) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T: Send + Sync + 'static> Shared<T> {
    /// A mark of these elements that neither keeps them alive nor stops a
    /// write in place: [`Mark::is`] later says whether a buffer still holds
    /// them, unwritten since.
    pub fn mark(&self) -> Mark {
        let weak: std::sync::Weak<Elements<T>> = std::sync::Arc::downgrade(&self.0);
        Mark(weak)
    }

    fn address(&self) -> *const () {
        std::sync::Arc::as_ptr(&self.0).cast()
    }
}

/// Which elements a buffer held when it was marked ([`Buffer::mark`]).
///
/// Holds a weak reference: the elements are freed when the last buffer
/// holding them goes, and a write to them moves them first
/// (`Arc::make_mut` with weak references only leaves the weak ones behind,
/// so their allocation is never the buffer's again), which is what makes
/// [`Mark::is`] sound: the marked allocation cannot be reused while the
/// mark holds it, so an equal address is the same, unwritten elements.
pub struct Mark(std::sync::Weak<dyn std::any::Any + Send + Sync>);

impl Mark {
    /// Whether `buffer` holds the marked elements, not written since.
    pub fn is(&self, buffer: &Buffer) -> bool {
        self.0.strong_count() > 0 && std::ptr::eq(self.0.as_ptr().cast::<()>(), buffer.address())
    }
}

impl std::fmt::Debug for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mark({:p})", self.0.as_ptr().cast::<()>())
    }
}

impl<T: Clone> Shared<T> {
    /// The elements as an owned vector: taken if no one else holds them
    /// and they are not mapped, copied otherwise.
    pub fn into_vec(self) -> Vec<T> {
        match std::sync::Arc::try_unwrap(self.0) {
            Ok(Elements::Owned(v)) => v,
            Ok(mapped) => mapped.as_slice().to_vec(),
            Err(shared) => shared.as_slice().to_vec(),
        }
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> From<Vec<T>> for Shared<T> {
    fn from(v: Vec<T>) -> Self {
        Shared(std::sync::Arc::new(Elements::Owned(v)))
    }
}

impl<T> FromIterator<T> for Shared<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Shared::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<'a, T> IntoIterator for &'a Shared<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.as_slice().iter()
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_slice()
    }
}

impl<T: Clone> std::ops::DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // Shared: the writer gets its own copy (`Elements::clone` is an
        // owned one); held alone but mapped: the copy replaces the mapping.
        let elements = std::sync::Arc::make_mut(&mut self.0);
        if let Elements::Mapped { .. } = elements {
            *elements = elements.clone();
        }
        match elements {
            Elements::Owned(v) => v.as_mut_slice(),
            Elements::Mapped { .. } => unreachable!("replaced by an owned copy above"),
        }
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_slice().fmt(f)
    }
}

/// Typed, contiguous element storage (little-endian on every supported
/// target), shared on clone and copied on write ([`Shared`]). Typed
/// vectors keep the alignment each element type needs, so a buffer can be
/// viewed as bytes and back without copying.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    F32(Shared<f32>),
    F64(Shared<f64>),
    I32(Shared<i32>),
    I64(Shared<i64>),
    U32(Shared<u32>),
    U8(Shared<u8>),
    F16(Shared<f16>),
    BF16(Shared<bf16>),
    I8(Shared<i8>),
}

/// Element types that are plain bytes: every bit pattern is a valid value,
/// no padding, no pointers.
trait Pod: Copy {}
impl Pod for f32 {}
impl Pod for f64 {}
impl Pod for i32 {}
impl Pod for i64 {}
impl Pod for u32 {}
impl Pod for u8 {}
// `half::f16` and `half::bf16` are `#[repr(transparent)]` over `u16`.
impl Pod for f16 {}
impl Pod for bf16 {}
impl Pod for i8 {}

fn pod_bytes<T: Pod>(v: &[T]) -> &[u8] {
    // SAFETY: `T: Pod` has no padding and no invalid bit patterns, u8 has
    // alignment 1, and the byte length is exactly the slice's size.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn pod_bytes_mut<T: Pod>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `pod_bytes`; additionally any bytes written through the
    // view form a valid `T` because every bit pattern of a `Pod` is valid.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

macro_rules! each_buffer {
    ($buf:expr, $v:ident => $body:expr) => {
        match $buf {
            Buffer::F32($v) => $body,
            Buffer::F64($v) => $body,
            Buffer::I32($v) => $body,
            Buffer::I64($v) => $body,
            Buffer::U32($v) => $body,
            Buffer::U8($v) => $body,
            Buffer::F16($v) => $body,
            Buffer::BF16($v) => $body,
            Buffer::I8($v) => $body,
        }
    };
}

impl Buffer {
    /// A buffer of `len` zero elements.
    pub fn zeros(dtype: DType, len: usize) -> Buffer {
        match dtype {
            DType::F32 => Buffer::F32(vec![0.0; len].into()),
            DType::F64 => Buffer::F64(vec![0.0; len].into()),
            DType::I32 => Buffer::I32(vec![0; len].into()),
            DType::I64 => Buffer::I64(vec![0; len].into()),
            DType::U32 => Buffer::U32(vec![0; len].into()),
            DType::U8 => Buffer::U8(vec![0; len].into()),
            DType::F16 => Buffer::F16(vec![f16::ZERO; len].into()),
            DType::BF16 => Buffer::BF16(vec![bf16::ZERO; len].into()),
            DType::I8 => Buffer::I8(vec![0; len].into()),
        }
    }

    /// Copies little-endian bytes into a new buffer. `bytes.len()` must be a
    /// multiple of the element size.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<Buffer, ShapeError> {
        if !bytes.len().is_multiple_of(dtype.size()) {
            return Err(ShapeError(format!(
                "{} bytes is not a whole number of {dtype} elements",
                bytes.len()
            )));
        }
        let mut buf = Buffer::zeros(dtype, bytes.len() / dtype.size());
        buf.as_bytes_mut().copy_from_slice(bytes);
        Ok(buf)
    }

    /// `len` elements of `dtype` at byte `offset` of `mapping`, without
    /// copying them: read from there, copied on the first write
    /// ([`Shared`]). Errors if they run past the mapping's end or the
    /// offset is not aligned for the element type.
    pub fn mapped(
        dtype: DType,
        mapping: &std::sync::Arc<crate::mapped::Mapping>,
        offset: usize,
        len: usize,
    ) -> Result<Buffer, ShapeError> {
        len.checked_mul(dtype.size())
            .filter(|b| {
                offset
                    .checked_add(*b)
                    .is_some_and(|end| end <= mapping.len())
            })
            .ok_or_else(|| {
                ShapeError(format!(
                    "{len} {dtype} elements at byte {offset} run past the mapping's {} bytes",
                    mapping.len()
                ))
            })?;
        let address = mapping.bytes().as_ptr() as usize + offset;
        if !address.is_multiple_of(dtype.size()) {
            return Err(ShapeError(format!(
                "{dtype} elements at byte {offset} are not aligned"
            )));
        }
        fn shared<T: Pod>(
            mapping: &std::sync::Arc<crate::mapped::Mapping>,
            offset: usize,
            len: usize,
        ) -> Shared<T> {
            Shared(std::sync::Arc::new(Elements::Mapped {
                mapping: mapping.clone(),
                offset,
                len,
            }))
        }
        Ok(match dtype {
            DType::F32 => Buffer::F32(shared(mapping, offset, len)),
            DType::F64 => Buffer::F64(shared(mapping, offset, len)),
            DType::I32 => Buffer::I32(shared(mapping, offset, len)),
            DType::I64 => Buffer::I64(shared(mapping, offset, len)),
            DType::U32 => Buffer::U32(shared(mapping, offset, len)),
            DType::U8 => Buffer::U8(shared(mapping, offset, len)),
            DType::F16 => Buffer::F16(shared(mapping, offset, len)),
            DType::BF16 => Buffer::BF16(shared(mapping, offset, len)),
            DType::I8 => Buffer::I8(shared(mapping, offset, len)),
        })
    }

    /// Whether the elements live in a read-only mapping ([`Buffer::mapped`]).
    pub fn is_mapped(&self) -> bool {
        each_buffer!(self, v => v.is_mapped())
    }

    pub fn dtype(&self) -> DType {
        match self {
            Buffer::F32(_) => DType::F32,
            Buffer::F64(_) => DType::F64,
            Buffer::I32(_) => DType::I32,
            Buffer::I64(_) => DType::I64,
            Buffer::U32(_) => DType::U32,
            Buffer::U8(_) => DType::U8,
            Buffer::F16(_) => DType::F16,
            Buffer::BF16(_) => DType::BF16,
            Buffer::I8(_) => DType::I8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_buffer!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as raw (native = little-endian) bytes, without copying.
    pub fn as_bytes(&self) -> &[u8] {
        each_buffer!(self, v => pod_bytes(v))
    }

    /// The elements as bytes to write; copied first if another holder
    /// shares them ([`Shared`]).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        each_buffer!(self, v => pod_bytes_mut(v))
    }

    /// Whether another holder shares these elements (a write would copy
    /// them first).
    pub fn is_shared(&self) -> bool {
        each_buffer!(self, v => v.is_shared())
    }

    /// A mark of the elements this buffer holds now (see [`Mark`]).
    pub fn mark(&self) -> Mark {
        each_buffer!(self, v => v.mark())
    }

    fn address(&self) -> *const () {
        each_buffer!(self, v => v.address())
    }

    /// Whether `self` and `other` hold the same elements in memory (a clone
    /// of one another not written since), not merely equal ones.
    pub fn same_as(&self, other: &Buffer) -> bool {
        match (self, other) {
            (Buffer::F32(a), Buffer::F32(b)) => a.same_as(b),
            (Buffer::F64(a), Buffer::F64(b)) => a.same_as(b),
            (Buffer::I32(a), Buffer::I32(b)) => a.same_as(b),
            (Buffer::I64(a), Buffer::I64(b)) => a.same_as(b),
            (Buffer::U32(a), Buffer::U32(b)) => a.same_as(b),
            (Buffer::U8(a), Buffer::U8(b)) => a.same_as(b),
            (Buffer::F16(a), Buffer::F16(b)) => a.same_as(b),
            (Buffer::BF16(a), Buffer::BF16(b)) => a.same_as(b),
            (Buffer::I8(a), Buffer::I8(b)) => a.same_as(b),
            _ => false,
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        self.as_slice()
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        self.as_mut_slice()
    }

    /// The elements as `&[T]` if the buffer holds `T`s.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(self)
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        T::slice_mut(self)
    }
}

/// An element type a [`Buffer`] can hold: lets modules write one generic
/// kernel for several dtypes (`x.as_slice::<f16>()`).
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn slice(buffer: &Buffer) -> Option<&[Self]>;
    fn slice_mut(buffer: &mut Buffer) -> Option<&mut [Self]>;
    fn into_buffer(v: Vec<Self>) -> Buffer;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(buffer: &Buffer) -> Option<&[Self]> {
                match buffer {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(buffer: &mut Buffer) -> Option<&mut [Self]> {
                match buffer {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_buffer(v: Vec<Self>) -> Buffer {
                Buffer::$variant(v.into())
            }
        }
    };
}

element!(f32, F32);
element!(f64, F64);
element!(i32, I32);
element!(i64, I64);
element!(u32, U32);
element!(u8, U8);
element!(f16, F16);
element!(bf16, BF16);
element!(i8, I8);

/// A shape that does not fit its data, or data that does not fit its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

/// Number of elements a shape describes, or `None` if it overflows `usize`.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A typed buffer with a shape (row-major). The element count always equals
/// the product of the shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Buffer,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Buffer) -> Result<Tensor, ShapeError> {
        match element_count(&shape) {
            Some(n) if n == data.len() => Ok(Tensor { shape, data }),
            Some(n) => Err(ShapeError(format!(
                "shape {} needs {n} elements, data has {}",
                format_shape(&shape),
                data.len()
            ))),
            None => Err(ShapeError(format!(
                "shape {} overflows",
                format_shape(&shape)
            ))),
        }
    }

    /// An f32 tensor; panics if the shape does not match (for tests and
    /// generators where it is known to match).
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::new(shape.to_vec(), Buffer::F32(data.into())).expect("shape matches data")
    }

    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, ShapeError> {
        let n = element_count(shape)
            .ok_or_else(|| ShapeError(format!("shape {} overflows", format_shape(shape))))?;
        Tensor::new(shape.to_vec(), Buffer::zeros(dtype, n))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &Buffer {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut Buffer {
        &mut self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte_len(&self) -> usize {
        self.data.len() * self.dtype().size()
    }

    pub fn into_parts(self) -> (Vec<usize>, Buffer) {
        (self.shape, self.data)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        self.data.as_f32()
    }

    /// The elements as `&[T]` if the tensor holds `T`s.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        self.data.as_slice()
    }

    /// A tensor of `T`s; panics if the shape does not match (for tests and
    /// kernels whose output shape is known to match).
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Tensor {
        Tensor::new(shape.to_vec(), T::into_buffer(data)).expect("shape matches data")
    }

    /// Same dtype, same shape and the same bytes (NaNs compare by bits).
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && self.dtype() == other.dtype()
            && self.data.as_bytes() == other.data.as_bytes()
    }

    /// `f32[3x4]`-style description.
    pub fn describe(&self) -> String {
        format!("{}[{}]", self.dtype(), format_shape(&self.shape))
    }
}

/// `3x4x5`; a scalar-shaped (rank 0) tensor is `scalar`.
pub fn format_shape(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".to_string();
    }
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        assert!(Tensor::new(vec![2, 3], Buffer::F32(vec![0.0; 6].into())).is_ok());
        let err = Tensor::new(vec![2, 3], Buffer::F32(vec![0.0; 5].into())).unwrap_err();
        assert!(err.0.contains("needs 6 elements, data has 5"), "{err}");
        let err = Tensor::new(vec![usize::MAX, 3], Buffer::F32(vec![].into())).unwrap_err();
        assert!(err.0.contains("overflows"), "{err}");
    }

    #[test]
    fn bytes_round_trip_for_every_dtype() {
        for dtype in DType::ALL {
            let mut buf = Buffer::zeros(dtype, 5);
            for (i, b) in buf.as_bytes_mut().iter_mut().enumerate() {
                *b = i as u8;
            }
            let back = Buffer::from_le_bytes(dtype, buf.as_bytes()).unwrap();
            assert_eq!(back.as_bytes(), buf.as_bytes());
            assert_eq!(back.len(), 5);
            assert_eq!(DType::from_name(dtype.name()), Some(dtype));
        }
        assert!(Buffer::from_le_bytes(DType::F64, &[0; 7]).is_err());
    }

    #[test]
    fn a_clone_shares_the_bytes_and_a_write_copies_them_first() {
        let a = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]);
        let mut b = a.clone();
        assert!(a.data().same_as(b.data()), "a clone moves no bytes");
        assert!(a.data().is_shared());
        b.data_mut().as_f32_mut().unwrap()[1] = 20.0;
        assert!(!a.data().same_as(b.data()), "the writer got its own copy");
        assert_eq!(
            a.as_f32(),
            Some(&[1.0, 2.0, 3.0][..]),
            "the first holder's bytes are unchanged"
        );
        assert_eq!(b.as_f32(), Some(&[1.0, 20.0, 3.0][..]));
        // No one else holds them now: a write does not copy again.
        let before = b.as_f32().unwrap().as_ptr();
        b.data_mut().as_f32_mut().unwrap()[0] = 10.0;
        assert_eq!(b.as_f32().unwrap().as_ptr(), before);
        assert!(!a.data().is_shared());
    }

    #[test]
    fn a_mark_sees_a_write_without_making_it_copy() {
        let mut a = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]);
        let mark = a.data().mark();
        assert!(mark.is(a.data()));
        assert!(
            mark.is(a.clone().data()),
            "a clone holds the marked elements"
        );
        assert!(!a.data().is_shared(), "a mark is no holder");
        let elements = a.as_f32().unwrap().as_ptr();
        a.data_mut().as_f32_mut().unwrap()[1] = 20.0;
        assert_eq!(
            a.as_f32().unwrap().as_ptr(),
            elements,
            "the write went in place, no copy"
        );
        assert!(!mark.is(a.data()), "the mark sees the write");
        // Equal elements elsewhere are not the marked ones.
        let b = Tensor::from_f32(&[3], vec![1.0, 20.0, 3.0]);
        let mark = a.data().mark();
        assert!(!mark.is(b.data()));
        drop(a);
        assert!(!mark.is(b.data()));
    }

    #[test]
    fn bit_eq_compares_nan_by_bits() {
        let a = Tensor::from_f32(&[1], vec![f32::NAN]);
        assert!(a.bit_eq(&a.clone()));
        assert_ne!(a, a.clone());
    }
}
