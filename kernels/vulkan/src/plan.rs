//! What one call runs on the device, from its declaration alone: the
//! scratch buffers to allocate, each pass's workgroup counts, and the
//! uniform block. Pure planning, no Vulkan calls, so it is checked without a
//! device.

use shared_state::{Bound, DType, EngineError, KernelDecl};

use crate::convention::Layout;
use crate::gpu::Limits;

/// One dispatch of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct PassPlan {
    /// Index into the declaration's `launch.passes` (and the kernel's
    /// pipelines).
    pub pass: usize,
    pub groups: [u32; 3],
}

/// Everything a call needs on the device besides its inputs and outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Scratch buffers, in declaration order: dtype and element count.
    pub scratch: Vec<(DType, usize)>,
    /// Passes to dispatch, in order. A pass with zero workgroups in some
    /// dimension (an empty input) is left out.
    pub passes: Vec<PassPlan>,
    /// The uniform block's bytes.
    pub uniform: Vec<u8>,
}

pub fn plan(
    decl: &KernelDecl,
    layout: &Layout,
    bound: &Bound,
    limits: &Limits,
) -> Result<Plan, EngineError> {
    let name = &decl.name;
    let scratch = decl
        .launch
        .scratch
        .iter()
        .map(|t| {
            let shape = t
                .eval_shape(&bound.dims)
                .map_err(|e| EngineError::bad_call(format!("{name}: scratch {}: {e}", t.name)))?;
            Ok((t.dtype, shape.iter().product()))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut passes = Vec::with_capacity(decl.launch.passes.len());
    for (i, pass) in decl.launch.passes.iter().enumerate() {
        let mut groups = [1u32; 3];
        for (axis, expr) in pass.workgroups.iter().enumerate() {
            let v = expr.eval(&bound.dims).map_err(|e| {
                EngineError::bad_call(format!(
                    "{name}: launch pass {i} ({}) workgroups: {e}",
                    pass.entry
                ))
            })?;
            let max = limits.max_groups[axis];
            groups[axis] = u32::try_from(v).ok().filter(|&g| g <= max).ok_or_else(|| {
                EngineError::bad_call(format!(
                    "{name}: launch pass {i} ({}) needs {v} workgroups in dimension {axis} \
                     (`{expr}`); this device allows {max}",
                    pass.entry
                ))
            })?;
        }
        if groups.contains(&0) {
            continue;
        }
        passes.push(PassPlan { pass: i, groups });
    }
    Ok(Plan {
        scratch,
        passes,
        uniform: layout.encode(name, bound)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    const LIMITS: Limits = Limits {
        max_groups: [65_535, 65_535, 65_535],
        max_storage_range: 1 << 27,
    };

    fn decl(name: &str) -> KernelDecl {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let file = root.join(format!("kernels/declarations/{name}.toml"));
        kiln_decl::parse(Path::new(name), &std::fs::read_to_string(file).unwrap()).unwrap()
    }

    fn plan_for(name: &str, shapes: &[&[usize]]) -> Result<Plan, EngineError> {
        let d = decl(name);
        let inputs: Vec<(DType, &[usize])> = shapes.iter().map(|s| (DType::F32, *s)).collect();
        let bound = d
            .bind(&inputs, &BTreeMap::new())
            .map_err(|e| EngineError::bad_call(e.0))?;
        plan(&d, &Layout::of(&d), &bound, &LIMITS)
    }

    #[test]
    fn group_counts_come_from_the_declaration() {
        let p = plan_for("saxpy", &[&[257], &[257]]).unwrap();
        assert_eq!(
            p.passes,
            [PassPlan {
                pass: 0,
                groups: [2, 1, 1]
            }]
        );
        assert_eq!(&p.uniform[..4], &257u32.to_le_bytes());
        assert_eq!(&p.uniform[4..8], &2f32.to_le_bytes(), "default a");
        let p = plan_for("matmul", &[&[17, 3], &[3, 33]]).unwrap();
        assert_eq!(p.passes[0].groups, [3, 2, 1]);
        let p = plan_for("dot", &[&[10_000_000], &[10_000_000]]).unwrap();
        assert_eq!(p.scratch, [(DType::F32, 256)]);
        assert_eq!(p.passes[0].groups, [256, 1, 1]);
        assert_eq!(
            p.passes[1],
            PassPlan {
                pass: 1,
                groups: [1, 1, 1]
            }
        );
    }

    #[test]
    fn empty_inputs_skip_passes_but_dot_still_writes_zero() {
        assert!(plan_for("saxpy", &[&[0], &[0]]).unwrap().passes.is_empty());
        assert!(
            plan_for("matmul", &[&[0, 5], &[5, 3]])
                .unwrap()
                .passes
                .is_empty()
        );
        let dot = plan_for("dot", &[&[0], &[0]]).unwrap();
        assert_eq!(dot.passes.len(), 2, "partial writes 0, finish sums it");
        assert_eq!(dot.scratch, [(DType::F32, 1)]);
        let scan = plan_for("prefix_sum", &[&[0]]).unwrap();
        assert!(scan.passes.iter().all(|p| p.pass == 1), "{scan:?}");
    }

    #[test]
    fn too_many_workgroups_is_a_bad_call_naming_the_pass() {
        let err = plan_for("matmul", &[&[2_000_000, 1], &[1, 1]]).unwrap_err();
        assert!(
            err.message
                .contains("matmul: launch pass 0 (main) needs 125000 workgroups in dimension 1"),
            "{err}"
        );
        // 1-D kernels cap their count and loop in the shader.
        let p = plan_for("saxpy", &[&[100_000_000], &[100_000_000]]).unwrap();
        assert_eq!(p.passes[0].groups, [65_535, 1, 1]);
    }
}
