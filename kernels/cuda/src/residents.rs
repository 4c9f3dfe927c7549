//! Resident buffers: device memory a next version can take over
//! ([`crate::resident_memory`]), a host copy of the bytes once uploaded or
//! downloaded (so a checkpoint of an unchanged resident downloads
//! nothing), and the bytes copied each way, counted.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use cudarc::driver::{CudaStream, result};
use shared_state::{Buffer, DType, EngineError, Tensor, format_shape};

use crate::availability::driver_error;
use crate::resident_memory::{Placement, ResidentMemory};

/// Notes (`info`) with the bytes copied host -> device, device -> host and
/// device -> device over the engine's life (the Vulkan module's names).
pub const TO_DEVICE_NOTE: &str = "transfers/host_to_device_bytes";
pub const TO_HOST_NOTE: &str = "transfers/device_to_host_bytes";
pub const DEVICE_COPY_NOTE: &str = "transfers/device_copy_bytes";

/// Bytes copied each way: uploads of call arguments and residents,
/// downloads of outputs and exported residents, copies on the device.
#[derive(Default)]
pub struct Transfers {
    pub to_device: Cell<u64>,
    pub to_host: Cell<u64>,
    pub device_copy: Cell<u64>,
}

impl Transfers {
    pub fn add(counter: &Cell<u64>, bytes: usize) {
        counter.set(counter.get() + bytes as u64);
    }
}

/// A named buffer kept in device memory between calls, any dtype.
pub struct Resident {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// `None` for an empty tensor (the driver makes no empty allocation).
    pub memory: Option<ResidentMemory>,
    /// The bytes in host memory, once uploaded from or downloaded to
    /// there: dropped when a kernel may write the resident in place (a
    /// stored output is a new resident), so it stays true while it is
    /// here. The next export shares its elements instead of downloading.
    /// Bytes the host hands back equal to it (a checkpoint's mapped bytes)
    /// replace it ([`Resident::adopt`]), so it costs no memory of its own.
    host: RefCell<Option<Tensor>>,
    /// Its memory is also another version's (handed over either way):
    /// never written in place.
    pub shared: Cell<bool>,
}

/// What the resident functions need of the engine.
pub struct Device<'e> {
    pub placement: &'e Placement,
    pub stream: &'e Arc<CudaStream>,
    pub transfers: &'e Transfers,
}

impl Device<'_> {
    fn synchronize(&self, doing: &str) -> Result<(), EngineError> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error(&format!("{doing} (synchronize)"), e))
    }

    /// New zero-filled device memory for `len` bytes (`None` when empty).
    pub fn zeros(&self, len: usize) -> Result<Option<ResidentMemory>, EngineError> {
        if len == 0 {
            return Ok(None);
        }
        let memory = self.placement.create(len)?;
        // SAFETY: `memory` is mapped read-write for this device, `size`
        // bytes from `ptr`; the stream is this engine's.
        unsafe { result::memset_d8_async(memory.ptr, 0, memory.size, self.stream.cu_stream()) }
            .map_err(|e| driver_error("zero-fill an output", e))?;
        Ok(Some(memory))
    }

    /// A resident holding `tensor`, uploaded; the tensor is kept as its
    /// host copy (shared, not copied).
    pub fn upload(&self, tensor: Tensor) -> Result<Resident, EngineError> {
        let bytes = tensor.data().as_bytes();
        let memory = if bytes.is_empty() {
            None
        } else {
            let memory = self.placement.create(bytes.len())?;
            // SAFETY: the mapping holds at least `bytes.len()` bytes;
            // `bytes` stays borrowed (not moved or freed) until the
            // stream is synchronized below.
            unsafe { result::memcpy_htod_async(memory.ptr, bytes, self.stream.cu_stream()) }
                .map_err(|e| driver_error("copy a resident to the device", e))?;
            self.synchronize("copy a resident to the device")?;
            Transfers::add(&self.transfers.to_device, bytes.len());
            Some(memory)
        };
        Ok(Resident {
            dtype: tensor.dtype(),
            shape: tensor.shape().to_vec(),
            memory,
            host: RefCell::new(Some(tensor)),
            shared: Cell::new(false),
        })
    }

    /// The resident's bytes in host memory: its host copy, or downloaded
    /// (and kept as the host copy).
    pub fn download(&self, r: &Resident) -> Result<Tensor, EngineError> {
        if let Some(t) = r.host.borrow().as_ref() {
            return Ok(t.clone());
        }
        let described = || format!("{}[{}]", r.dtype, format_shape(&r.shape));
        let data = match &r.memory {
            None => Buffer::zeros(r.dtype, 0),
            Some(memory) => {
                self.placement.bind()?;
                let mut bytes = vec![0u8; memory.len];
                // SAFETY: the mapping holds `len` bytes; `bytes` is not
                // moved or read until the stream is synchronized below.
                unsafe {
                    result::memcpy_dtoh_async(&mut bytes, memory.ptr, self.stream.cu_stream())
                }
                .map_err(|e| driver_error("copy a resident from the device", e))?;
                self.synchronize("copy a resident from the device")?;
                Transfers::add(&self.transfers.to_host, bytes.len());
                Buffer::from_le_bytes(r.dtype, &bytes)
                    .map_err(|e| EngineError::internal(format!("{}: {e}", described())))?
            }
        };
        let tensor = Tensor::new(r.shape.clone(), data)
            .map_err(|e| EngineError::internal(format!("{}: {e}", described())))?;
        *r.host.borrow_mut() = Some(tensor.clone());
        Ok(tensor)
    }

    /// Before a kernel may write `r` in place: its host copy goes, and
    /// memory another version shares is first copied on the device (the
    /// copy becomes the resident's), so that version's bytes stay.
    pub fn before_write(&self, r: &mut Resident) -> Result<bool, EngineError> {
        r.host.get_mut().take();
        if !r.shared.get() {
            return Ok(false);
        }
        if let Some(handed) = &r.memory {
            let copy = self.placement.create(handed.len)?;
            // SAFETY: both mappings hold `len` bytes and are live; the
            // copy is complete once the stream is synchronized below.
            unsafe {
                result::memcpy_dtod_async(copy.ptr, handed.ptr, handed.len, self.stream.cu_stream())
            }
            .map_err(|e| driver_error("copy a shared resident on the device", e))?;
            self.synchronize("copy a shared resident on the device")?;
            Transfers::add(&self.transfers.device_copy, handed.len);
            r.memory = Some(copy);
        }
        r.shared.set(false);
        Ok(true)
    }
}

impl Resident {
    /// A resident over memory another version handed over (shared).
    pub fn handed_over(
        dtype: DType,
        shape: Vec<usize>,
        memory: Option<ResidentMemory>,
    ) -> Resident {
        Resident {
            dtype,
            shape,
            memory,
            host: RefCell::new(None),
            shared: Cell::new(true),
        }
    }

    /// A resident over memory a kernel just wrote (no host copy).
    pub fn computed(dtype: DType, shape: Vec<usize>, memory: Option<ResidentMemory>) -> Resident {
        Resident {
            dtype,
            shape,
            memory,
            host: RefCell::new(None),
            shared: Cell::new(false),
        }
    }

    /// The device pointer (0 for an empty tensor).
    pub fn ptr(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.ptr)
    }

    /// Its host copy, if it has one (shared, not copied).
    pub fn host_copy(&self) -> Option<Tensor> {
        self.host.borrow().clone()
    }

    /// Takes `tensor` as the host copy of this handed-over resident: the
    /// previous version's host copy of that very memory, true as long as
    /// neither version writes it (neither does: [`Device::before_write`]
    /// copies shared memory first). Ignored where this resident is not a
    /// handed-over one of that dtype and size, or already has one.
    pub fn take_handed_host_copy(&mut self, tensor: Tensor) {
        let len = self.memory.as_ref().map_or(0, |m| m.len);
        let fits = self.shared.get()
            && self.dtype == tensor.dtype()
            && self.shape == tensor.shape()
            && len == tensor.byte_len();
        if fits && self.host.get_mut().is_none() {
            *self.host.get_mut() = Some(tensor);
        }
    }

    /// Takes `tensor` as the host copy when it is the same bytes, dtype
    /// and shape as the one held: nothing is uploaded and the engine's own
    /// copy goes. False when there is no host copy or the bytes differ.
    pub fn adopt(&self, tensor: &Tensor) -> bool {
        let mut host = self.host.borrow_mut();
        let Some(held) = host.as_ref() else {
            return false;
        };
        let same = (held.data().same_as(tensor.data()) && held.shape() == tensor.shape())
            || held.bit_eq(tensor);
        if same {
            *host = Some(tensor.clone());
        }
        same
    }
}
