//! Tensors that live in device memory for one call: its inputs uploaded
//! for it, its returned outputs and its scratch (resident buffers are
//! [`crate::residents`], memory the next version can take over).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use shared_state::{Buffer, DType, EngineError, Tensor, element_count, format_shape};

use crate::availability::driver_error;

/// A typed, shaped buffer in device memory. The bytes are kept untyped (any
/// dtype can be resident); kernels take the device pointer as a pointer to
/// the declared element type.
pub struct DeviceTensor {
    dtype: DType,
    shape: Vec<usize>,
    /// `None` for an empty tensor (the driver cannot allocate 0 bytes).
    bytes: Option<CudaSlice<u8>>,
}

impl DeviceTensor {
    /// Copies a host tensor to the device.
    pub fn upload(stream: &Arc<CudaStream>, tensor: &Tensor) -> Result<DeviceTensor, EngineError> {
        let host = tensor.data().as_bytes();
        let bytes = if host.is_empty() {
            None
        } else {
            Some(
                stream
                    .clone_htod(host)
                    .map_err(|e| driver_error("copy to the device", e))?,
            )
        };
        Ok(DeviceTensor {
            dtype: tensor.dtype(),
            shape: tensor.shape().to_vec(),
            bytes,
        })
    }

    /// A zero-filled device tensor.
    pub fn zeros(
        stream: &Arc<CudaStream>,
        dtype: DType,
        shape: &[usize],
    ) -> Result<DeviceTensor, EngineError> {
        let len = element_count(shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| {
                EngineError::bad_call(format!("shape {} overflows", format_shape(shape)))
            })?;
        let bytes = if len == 0 {
            None
        } else {
            Some(
                stream
                    .alloc_zeros::<u8>(len)
                    .map_err(|e| driver_error(&format!("allocate {len} bytes"), e))?,
            )
        };
        Ok(DeviceTensor {
            dtype,
            shape: shape.to_vec(),
            bytes,
        })
    }

    /// Copies the tensor back to the host (waits for the stream).
    pub fn download(&self, stream: &Arc<CudaStream>) -> Result<Tensor, EngineError> {
        let data = match &self.bytes {
            None => Buffer::zeros(self.dtype, 0),
            Some(slice) => {
                let host = stream
                    .clone_dtoh(slice)
                    .map_err(|e| driver_error("copy from the device", e))?;
                stream
                    .synchronize()
                    .map_err(|e| driver_error("wait for the copy from the device", e))?;
                Buffer::from_le_bytes(self.dtype, &host)
                    .map_err(|e| EngineError::internal(format!("device buffer: {e}")))?
            }
        };
        Tensor::new(self.shape.clone(), data)
            .map_err(|e| EngineError::internal(format!("device buffer: {e}")))
    }

    /// The device address (0 when the tensor is empty). The engine
    /// disables cudarc's event tracking, so there is nothing to wait for.
    pub fn ptr(&self, stream: &CudaStream) -> u64 {
        self.bytes.as_ref().map_or(0, |s| s.device_ptr(stream).0)
    }

    /// Bytes of data.
    pub fn byte_len(&self) -> usize {
        self.bytes.as_ref().map_or(0, |s| s.len())
    }
}
