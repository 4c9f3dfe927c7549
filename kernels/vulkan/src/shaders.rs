//! The compute shaders, compiled from `shaders/*.wgsl` to SPIR-V by
//! `build.rs` and embedded in the module.

use std::ffi::CStr;

/// One compute pipeline the engine builds at start: a shader and the entry
/// point in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Saxpy,
    DotPartial,
    DotFinish,
    Matmul,
    Stencil2d,
    Softmax,
}

impl Program {
    pub const ALL: [Program; 6] = [
        Program::Saxpy,
        Program::DotPartial,
        Program::DotFinish,
        Program::Matmul,
        Program::Stencil2d,
        Program::Softmax,
    ];

    /// Position in [`Program::ALL`] (and in the engine's pipeline table).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The shader file (under `shaders/`) it comes from.
    pub fn shader(self) -> &'static str {
        match self {
            Program::Saxpy => "saxpy.wgsl",
            Program::DotPartial | Program::DotFinish => "dot.wgsl",
            Program::Matmul => "matmul.wgsl",
            Program::Stencil2d => "stencil2d.wgsl",
            Program::Softmax => "softmax.wgsl",
        }
    }

    pub fn entry_point(self) -> &'static CStr {
        match self {
            Program::DotPartial => c"partial",
            Program::DotFinish => c"finish",
            _ => c"main",
        }
    }

    /// The SPIR-V binary (little-endian words).
    pub fn spirv(self) -> &'static [u8] {
        macro_rules! spv {
            ($name:literal) => {
                include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".spv"))
            };
        }
        match self {
            Program::Saxpy => spv!("saxpy"),
            Program::DotPartial | Program::DotFinish => spv!("dot"),
            Program::Matmul => spv!("matmul"),
            Program::Stencil2d => spv!("stencil2d"),
            Program::Softmax => spv!("softmax"),
        }
    }

    /// The SPIR-V as 32-bit words (copied: `include_bytes!` data is only
    /// byte-aligned).
    pub fn words(self) -> Vec<u32> {
        self.spirv()
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    }
}

/// Size of the push-constant block every shader declares (`Params`:
/// `vec4<u32>` then `vec4<f32>`).
pub const PARAMS_BYTES: usize = 32;

/// The push constants of one dispatch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Params {
    pub u: [u32; 4],
    pub f: [f32; 4],
}

impl Params {
    pub fn to_bytes(self) -> [u8; PARAMS_BYTES] {
        let mut out = [0u8; PARAMS_BYTES];
        let words = self
            .u
            .iter()
            .copied()
            .chain(self.f.iter().map(|v| v.to_bits()));
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_valid_spirv_with_its_entry_point() {
        for p in Program::ALL {
            let words = p.words();
            assert_eq!(words[0], 0x0723_0203, "{}: SPIR-V magic", p.shader());
            // The entry point name is stored as a nul-terminated literal.
            let name = p.entry_point().to_bytes_with_nul();
            assert!(
                p.spirv().windows(name.len()).any(|w| w == name),
                "{}: no entry point {:?}",
                p.shader(),
                p.entry_point()
            );
            assert_eq!(Program::ALL[p.index()], p);
        }
    }

    #[test]
    fn params_are_laid_out_as_the_shaders_declare() {
        let bytes = Params {
            u: [1, 2, 3, 4],
            f: [0.5, 0.0, 0.0, 0.0],
        }
        .to_bytes();
        assert_eq!(&bytes[0..4], &1u32.to_le_bytes());
        assert_eq!(&bytes[12..16], &4u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &0.5f32.to_le_bytes());
    }
}
