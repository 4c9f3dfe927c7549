//! How each standard kernel runs on the device: which programs, with which
//! buffers, push constants and workgroup counts. Pure planning, no Vulkan
//! calls, so it is checked without a device.

use std::collections::BTreeMap;

use shared_state::kernels::{self as std_kernels, DOT, MATMUL, SAXPY, SOFTMAX, STENCIL2D};
use shared_state::{EngineError, Scalar};

use crate::gpu::Limits;
use crate::shaders::{Params, Program};

/// Invocations per workgroup of the 1-D shaders (`@workgroup_size(256)`).
pub const GROUP_1D: u64 = 256;
/// Output tile edge of the matmul shader (`@workgroup_size(16, 16)`).
pub const MATMUL_TILE: u64 = 16;
/// Most workgroups of dot's first pass, so its second pass is one group.
pub const DOT_MAX_GROUPS: u64 = 256;

/// A buffer a pass binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The call's argument of that position.
    Arg(usize),
    /// The call's scratch buffer ([`Plan::scratch_floats`]).
    Scratch,
    /// The output.
    Out,
}

/// One dispatch of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PassPlan {
    pub program: Program,
    pub bindings: [Slot; 3],
    pub params: Params,
    pub groups: [u32; 3],
}

/// Everything a call needs on the device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub passes: Vec<PassPlan>,
    /// f32 elements of scratch space, if any.
    pub scratch_floats: u64,
}

fn u32_dim(what: &str, v: usize) -> Result<u32, EngineError> {
    u32::try_from(v).map_err(|_| {
        EngineError::bad_call(format!(
            "{what} = {v} is too large for the Vulkan kernels (max {})",
            u32::MAX
        ))
    })
}

/// Workgroups for `n` items, `per_group` each, capped at the device's
/// limit (the shaders loop over what one round of groups does not cover).
fn groups_1d(n: u64, per_group: u64, limits: &Limits) -> u32 {
    let wanted = n.div_ceil(per_group).max(1);
    wanted.min(u64::from(limits.max_groups[0].max(1))) as u32
}

/// Plans a checked call: `shapes` are the argument shapes (already checked
/// against the kernel's signature), `params` the call's parameters.
pub fn plan(
    kernel: &str,
    shapes: &[&[usize]],
    params: &BTreeMap<String, Scalar>,
    limits: &Limits,
) -> Result<Plan, EngineError> {
    let pass = |program, bindings, u, f, groups| PassPlan {
        program,
        bindings,
        params: Params { u, f },
        groups,
    };
    let mut plan = Plan::default();
    match kernel {
        SAXPY => {
            let a = std_kernels::param_f64(params, "a", 2.0)? as f32;
            let n = u32_dim("n", shapes[0][0])?;
            if n > 0 {
                plan.passes.push(pass(
                    Program::Saxpy,
                    [Slot::Arg(0), Slot::Arg(1), Slot::Out],
                    [n, 0, 0, 0],
                    [a, 0.0, 0.0, 0.0],
                    [groups_1d(n.into(), GROUP_1D, limits), 1, 1],
                ));
            }
        }
        DOT => {
            let n = u32_dim("n", shapes[0][0])?;
            let groups = groups_1d(n.into(), GROUP_1D, limits).min(DOT_MAX_GROUPS as u32);
            plan.scratch_floats = groups.into();
            plan.passes.push(pass(
                Program::DotPartial,
                [Slot::Arg(0), Slot::Arg(1), Slot::Scratch],
                [n, 0, 0, 0],
                [0.0; 4],
                [groups, 1, 1],
            ));
            plan.passes.push(pass(
                Program::DotFinish,
                [Slot::Scratch, Slot::Scratch, Slot::Out],
                [groups, 0, 0, 0],
                [0.0; 4],
                [1, 1, 1],
            ));
        }
        MATMUL => {
            let m = u32_dim("m", shapes[0][0])?;
            let k = u32_dim("k", shapes[0][1])?;
            let n = u32_dim("n", shapes[1][1])?;
            if m > 0 && n > 0 {
                let gx = u64::from(n).div_ceil(MATMUL_TILE);
                let gy = u64::from(m).div_ceil(MATMUL_TILE);
                if gx > u64::from(limits.max_groups[0]) || gy > u64::from(limits.max_groups[1]) {
                    return Err(EngineError::bad_call(format!(
                        "matmul {m}x{k}x{n} needs {gx}x{gy} workgroups; this device allows {}x{}",
                        limits.max_groups[0], limits.max_groups[1]
                    )));
                }
                plan.passes.push(pass(
                    Program::Matmul,
                    [Slot::Arg(0), Slot::Arg(1), Slot::Out],
                    [m, k, n, 0],
                    [0.0; 4],
                    [gx as u32, gy as u32, 1],
                ));
            }
        }
        STENCIL2D => {
            let alpha = std_kernels::param_f64(params, "alpha", std_kernels::STENCIL_ALPHA)? as f32;
            let (h, w) = (shapes[0][0], shapes[0][1]);
            let total = u32_dim("h*w", h * w)?;
            if total > 0 {
                plan.passes.push(pass(
                    Program::Stencil2d,
                    [Slot::Arg(0), Slot::Arg(0), Slot::Out],
                    [u32_dim("h", h)?, u32_dim("w", w)?, 0, 0],
                    [alpha, 0.0, 0.0, 0.0],
                    [groups_1d(total.into(), GROUP_1D, limits), 1, 1],
                ));
            }
        }
        SOFTMAX => {
            let rows = u32_dim("rows", shapes[0][0])?;
            let cols = u32_dim("cols", shapes[0][1])?;
            u32_dim("rows*cols", shapes[0][0] * shapes[0][1])?;
            if rows > 0 && cols > 0 {
                plan.passes.push(pass(
                    Program::Softmax,
                    [Slot::Arg(0), Slot::Arg(0), Slot::Out],
                    [rows, cols, 0, 0],
                    [0.0; 4],
                    [groups_1d(rows.into(), 1, limits), 1, 1],
                ));
            }
        }
        other => {
            return Err(EngineError::internal(format!(
                "no Vulkan plan for kernel {other:?}"
            )));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_groups: [65_535, 65_535, 65_535],
        max_storage_range: 1 << 27,
    };

    #[test]
    fn group_counts_cover_every_element_and_respect_limits() {
        let p = plan(SAXPY, &[&[257], &[257]], &BTreeMap::new(), &LIMITS).unwrap();
        assert_eq!(p.passes[0].groups, [2, 1, 1]);
        assert_eq!(p.passes[0].params.f[0], 2.0, "default a");
        let p = plan(
            SAXPY,
            &[&[100_000_000], &[100_000_000]],
            &BTreeMap::new(),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(
            p.passes[0].groups,
            [65_535, 1, 1],
            "capped; the shader loops"
        );
        let p = plan(MATMUL, &[&[17, 3], &[3, 33]], &BTreeMap::new(), &LIMITS).unwrap();
        assert_eq!(p.passes[0].groups, [3, 2, 1]);
        assert_eq!(p.passes[0].params.u[..3], [17, 3, 33]);
    }

    #[test]
    fn empty_outputs_dispatch_nothing_but_dot_still_writes_zero() {
        let none = BTreeMap::new();
        assert!(
            plan(SAXPY, &[&[0], &[0]], &none, &LIMITS)
                .unwrap()
                .passes
                .is_empty()
        );
        assert!(
            plan(MATMUL, &[&[0, 5], &[5, 3]], &none, &LIMITS)
                .unwrap()
                .passes
                .is_empty()
        );
        assert!(
            plan(SOFTMAX, &[&[4, 0]], &none, &LIMITS)
                .unwrap()
                .passes
                .is_empty()
        );
        let dot = plan(DOT, &[&[0], &[0]], &none, &LIMITS).unwrap();
        assert_eq!(dot.passes.len(), 2);
        assert_eq!(dot.scratch_floats, 1);
    }

    #[test]
    fn dot_partials_fit_one_finishing_group() {
        let p = plan(
            DOT,
            &[&[10_000_000], &[10_000_000]],
            &BTreeMap::new(),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(p.scratch_floats, DOT_MAX_GROUPS);
        assert_eq!(p.passes[1].params.u[0], DOT_MAX_GROUPS as u32);
        assert_eq!(p.passes[1].groups, [1, 1, 1]);
    }

    #[test]
    fn bad_params_and_huge_shapes_are_bad_calls() {
        let mut params = BTreeMap::new();
        params.insert("alpha".to_string(), Scalar::Text("x".into()));
        let err = plan(STENCIL2D, &[&[3, 3]], &params, &LIMITS).unwrap_err();
        assert!(err.message.contains("alpha must be a number"), "{err}");
        let err = plan(
            MATMUL,
            &[&[2_000_000, 1], &[1, 1]],
            &BTreeMap::new(),
            &LIMITS,
        )
        .unwrap_err();
        assert!(err.message.contains("workgroups"), "{err}");
    }
}
