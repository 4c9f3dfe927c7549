//! A shared library with no kiln entry points at all.

/// Something to export, so the library is not empty.
#[unsafe(no_mangle)]
pub extern "C" fn not_a_kiln_module() -> u32 {
    42
}
