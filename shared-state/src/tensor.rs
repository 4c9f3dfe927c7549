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

/// Owned, typed, contiguous element storage (little-endian on every supported
/// target). Typed vectors keep the alignment each element type needs, so a
/// buffer can be viewed as bytes and back without copying.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U8(Vec<u8>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I8(Vec<i8>),
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
            DType::F32 => Buffer::F32(vec![0.0; len]),
            DType::F64 => Buffer::F64(vec![0.0; len]),
            DType::I32 => Buffer::I32(vec![0; len]),
            DType::I64 => Buffer::I64(vec![0; len]),
            DType::U32 => Buffer::U32(vec![0; len]),
            DType::U8 => Buffer::U8(vec![0; len]),
            DType::F16 => Buffer::F16(vec![f16::ZERO; len]),
            DType::BF16 => Buffer::BF16(vec![bf16::ZERO; len]),
            DType::I8 => Buffer::I8(vec![0; len]),
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
        each_buffer!(self, v => pod_bytes(v.as_slice()))
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        each_buffer!(self, v => pod_bytes_mut(v.as_mut_slice()))
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
                Buffer::$variant(v)
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
        Tensor::new(shape.to_vec(), Buffer::F32(data)).expect("shape matches data")
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
        assert!(Tensor::new(vec![2, 3], Buffer::F32(vec![0.0; 6])).is_ok());
        let err = Tensor::new(vec![2, 3], Buffer::F32(vec![0.0; 5])).unwrap_err();
        assert!(err.0.contains("needs 6 elements, data has 5"), "{err}");
        let err = Tensor::new(vec![usize::MAX, 3], Buffer::F32(vec![])).unwrap_err();
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
    fn bit_eq_compares_nan_by_bits() {
        let a = Tensor::from_f32(&[1], vec![f32::NAN]);
        assert!(a.bit_eq(&a.clone()));
        assert_ne!(a, a.clone());
    }
}
