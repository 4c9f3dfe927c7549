//! Read-only memory a buffer's elements may live in instead of a `Vec`: a
//! shared mapping of a *sealed* memfd (a checkpoint the host wrote), so a
//! restarted engine serves its state without copying it.
//!
//! Why a mapping here is sound: [`Mapping::of_sealed`] refuses a file
//! whose seals do not forbid writing and shrinking it (`F_SEAL_WRITE`,
//! `F_SEAL_SHRINK`), so the mapped bytes can never change under a reader
//! and never vanish (no SIGBUS), whoever else holds the file. The mapping is
//! `PROT_READ`, `MAP_SHARED`: it does not count against `RLIMIT_DATA`
//! (`--worker-memory`), and its pages are the memfd's own (no copy).
//!
//! Freeing runs only this crate's code: `munmap` of the C library every
//! process links already. No crate is added to the contract for two
//! system calls (a dependency here would change the contract's metadata
//! hash in every module build, `Cargo.toml`), so they are declared below
//! with their POSIX signatures.

use std::ffi::{c_int, c_long, c_void};
use std::fs::File;
use std::os::fd::AsRawFd;

const PROT_READ: c_int = 1;
const MAP_SHARED: c_int = 1;
const F_GET_SEALS: c_int = 1034;
/// `F_SEAL_SHRINK | F_SEAL_WRITE`: what makes a mapping of the file safe.
pub const NEEDED_SEALS: c_int = 0x0002 | 0x0008;

unsafe extern "C" {
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: c_long,
    ) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

/// A read-only shared mapping of a whole sealed file, unmapped when the
/// last buffer in it goes.
pub struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapped bytes are read-only and sealed against writing
// (`of_sealed`): no thread can change them, so sharing `&[u8]` views of
// them across threads is as sound as sharing an immutable `Vec<u8>`.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: the memory is immutable for the mapping's life.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all of `file`, read-only and shared, after checking its seals
    /// forbid writing and shrinking it. Errors name what is missing.
    pub fn of_sealed(file: &File) -> std::io::Result<Mapping> {
        let seals = seals(file)?;
        if seals & NEEDED_SEALS != NEEDED_SEALS {
            return Err(std::io::Error::other(format!(
                "not sealed against writing and shrinking (seals {seals:#x}): a mapping of it could change or fault"
            )));
        }
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        if len == 0 {
            return Err(std::io::Error::other("empty file: nothing to map"));
        }
        // SAFETY: a fresh mapping (no address requested) of `len` bytes of
        // an open descriptor; the kernel checks the rest and reports
        // failure as MAP_FAILED. The file is sealed against shrinking and
        // writing, so the `len` bytes stay readable and unchanged for as
        // long as they are mapped.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                PROT_READ,
                MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr as isize == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes (unmapped
        // only in `drop`, which needs `&mut self`), which nothing can
        // change (sealed), so a shared slice over it is valid for `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `of_sealed` made, and
        // no slice into it outlives `self` (every view borrows it).
        unsafe {
            munmap(self.ptr.cast_mut().cast(), self.len);
        }
    }
}

/// The seals on `file` (`F_GET_SEALS`; 0 for a file that cannot be
/// sealed).
pub fn seals(file: &File) -> std::io::Result<c_int> {
    // SAFETY: F_GET_SEALS takes no argument and only reads the open
    // descriptor's seals.
    let seals = unsafe { fcntl(file.as_raw_fd(), F_GET_SEALS) };
    if seals < 0 {
        let e = std::io::Error::last_os_error();
        // EINVAL: not a sealable file (a regular file on disk).
        return match e.raw_os_error() {
            Some(22) => Ok(0),
            _ => Err(e),
        };
    }
    Ok(seals)
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({:p}, {} bytes)", self.ptr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Buffer, DType};
    use std::io::Write;
    use std::os::fd::FromRawFd;
    use std::sync::Arc;

    unsafe extern "C" {
        fn memfd_create(name: *const std::ffi::c_char, flags: std::ffi::c_uint) -> c_int;
    }
    const MFD_ALLOW_SEALING: std::ffi::c_uint = 2;
    const F_ADD_SEALS: c_int = 1033;

    /// A memfd holding `bytes`, sealed with `seals`.
    fn memfd(bytes: &[u8], seals: c_int) -> File {
        // SAFETY: a NUL-terminated name; the call only creates a descriptor.
        let fd = unsafe { memfd_create(c"kiln-test".as_ptr(), MFD_ALLOW_SEALING) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just created and is owned by nothing else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes).unwrap();
        // SAFETY: F_ADD_SEALS takes an int of seal bits.
        assert_eq!(unsafe { fcntl(fd, F_ADD_SEALS, seals) }, 0);
        file
    }

    #[test]
    fn a_sealed_memfd_is_read_in_place_and_a_write_copies_it() {
        let values: Vec<f32> = (0..1024).map(|i| i as f32).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = memfd(&bytes, NEEDED_SEALS | 0x0004);
        // The seal is real: the file refuses a write and a truncation.
        assert!(
            (&file).write_all(&[1]).is_err(),
            "a sealed file was written"
        );
        assert!(file.set_len(0).is_err(), "a sealed file was emptied");
        let mapping = Arc::new(Mapping::of_sealed(&file).unwrap());
        drop(file);
        let a = Buffer::mapped(DType::F32, &mapping, 16, 1020).unwrap();
        assert!(a.is_mapped());
        assert_eq!(a.as_f32().unwrap(), &values[4..]);
        assert_eq!(
            a.as_f32().unwrap().as_ptr().cast::<u8>(),
            mapping.bytes()[16..].as_ptr(),
            "read in place, not copied"
        );
        // A write copies: the mapping and other holders keep the bytes.
        let held = a.clone();
        let mark = a.mark();
        let mut b = a;
        b.as_f32_mut().unwrap()[0] = -1.0;
        assert!(!b.is_mapped());
        assert!(!mark.is(&b), "the mark sees the write");
        assert!(mark.is(&held));
        assert_eq!(held.as_f32().unwrap(), &values[4..]);
        // Held alone, mapped: the write still copies (the mapping is
        // read-only).
        let mut alone = Buffer::mapped(DType::F32, &mapping, 0, 4).unwrap();
        alone.as_f32_mut().unwrap()[3] = 7.0;
        assert_eq!(alone.as_f32().unwrap(), &[0.0, 1.0, 2.0, 7.0]);
        assert_eq!(&mapping.bytes()[12..16], &3.0f32.to_le_bytes());
        // Out of bounds, misaligned: refused.
        assert!(Buffer::mapped(DType::F32, &mapping, 4, 1024).is_err());
        assert!(Buffer::mapped(DType::F64, &mapping, 4, 1).is_err());
        drop(held);
        assert_eq!(
            Arc::strong_count(&mapping),
            1,
            "buffers gone, mapping freed"
        );
    }

    #[test]
    fn an_unsealed_file_is_not_mapped() {
        let file = memfd(&[0u8; 64], 0x0004);
        let e = Mapping::of_sealed(&file).unwrap_err().to_string();
        assert!(e.contains("not sealed"), "{e}");
    }
}
