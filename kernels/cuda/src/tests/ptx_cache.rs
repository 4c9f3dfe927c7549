//! The PTX cache carried in the snapshot, at the compile level (NVRTC, no
//! GPU): an unchanged `.cu` file is not compiled again, a changed one is;
//! an entry for another architecture or NVRTC, or a damaged one, is
//! ignored and never yields PTX other than the source's own.

use shared_state::{Scalar, Snapshot, SourceFile};

use kernel_conformance::support::{compiler_or_skip, declarations, source, sources};

use super::{ARCH, Cuda};
use crate::compile::{self, CompiledKernel};
use crate::ptx_cache::{self, PtxCache};

/// NVRTC's version, or `None` after the skip rule.
fn nvrtc_or_skip(test: &str) -> Option<(i32, i32)> {
    if !compiler_or_skip::<Cuda>(test) {
        return None;
    }
    Some(compile::nvrtc_version().unwrap_or_else(|e| panic!("{test}: {e}")))
}

fn cuda_sources() -> Vec<SourceFile> {
    sources::<Cuda>()
}

/// Compiles `sources` with `cache`, as an engine would.
fn compile_with(
    sources: &[SourceFile],
    nvrtc: (i32, i32),
    cache: &PtxCache,
) -> Vec<CompiledKernel> {
    compile::compile_all_cached(&declarations(), sources, ARCH, nvrtc, cache)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// The snapshot an engine that compiled `compiled` exports (its cache part),
/// read back as the next engine does.
fn handed_over(compiled: &[CompiledKernel]) -> (Snapshot, PtxCache) {
    let mut snapshot = Snapshot::new("kernel-cuda", "cuda");
    for c in compiled {
        ptx_cache::insert(&mut snapshot, &c.path, &c.key, &c.ptx.to_src());
    }
    let mut copy = snapshot.clone();
    let cache = PtxCache::take_from(&mut copy);
    assert!(copy.is_empty(), "cache sections are all taken");
    (snapshot, cache)
}

fn reused(compiled: &[CompiledKernel]) -> Vec<&str> {
    compiled
        .iter()
        .filter(|c| c.cached)
        .map(|c| c.kernel.as_str())
        .collect()
}

fn with_edit(sources: &[SourceFile], path: &str, edit: impl Fn(&str) -> String) -> Vec<SourceFile> {
    sources
        .iter()
        .map(|s| {
            if s.path == path {
                source(&s.path, &edit(&s.text))
            } else {
                s.clone()
            }
        })
        .collect()
}

#[test]
fn unchanged_sources_take_their_ptx_from_the_cache_and_an_edited_one_is_compiled() {
    let Some(nvrtc) = nvrtc_or_skip("unchanged_sources_take_their_ptx_from_the_cache") else {
        return;
    };
    let sources = cuda_sources();
    let first = compile_with(&sources, nvrtc, &PtxCache::default());
    assert!(reused(&first).is_empty());
    let (_, cache) = handed_over(&first);

    // The same sources: no NVRTC run at all, the same PTX.
    let again = compile_with(&sources, nvrtc, &cache);
    assert_eq!(reused(&again).len(), first.len(), "every kernel reused");
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.ptx.to_src(), b.ptx.to_src(), "{}", a.path);
        assert!(b.elapsed.is_zero(), "{}: NVRTC ran", b.path);
    }

    // One file edited: that one (only) compiled, and its PTX is the new
    // source's (the edit renames nothing but changes the code).
    let edited = with_edit(&sources, "kernels/saxpy.cu", |t| {
        format!(
            "// edited\n{t}\n__device__ float kiln_cache_test_marker(float x) {{ return x * 3.0f; }}\n"
        )
    });
    let after = compile_with(&edited, nvrtc, &cache);
    let recompiled: Vec<&str> = after
        .iter()
        .filter(|c| !c.cached)
        .map(|c| c.kernel.as_str())
        .collect();
    assert_eq!(recompiled, ["saxpy"]);
    let fresh = compile::compile_kernel(
        declarations().get("saxpy").unwrap(),
        edited
            .iter()
            .find(|s| s.path == "kernels/saxpy.cu")
            .unwrap(),
        ARCH,
    )
    .unwrap();
    let saxpy = after.iter().find(|c| c.kernel == "saxpy").unwrap();
    assert_eq!(saxpy.ptx.to_src(), fresh.ptx.to_src());
}

#[test]
fn a_cache_for_another_architecture_or_nvrtc_is_ignored() {
    let Some(nvrtc) = nvrtc_or_skip("a_cache_for_another_architecture_or_nvrtc_is_ignored") else {
        return;
    };
    let sources = cuda_sources();
    let sm80 = compile::compile_all_cached(
        &declarations(),
        &sources,
        "compute_80",
        nvrtc,
        &PtxCache::default(),
    )
    .unwrap()
    .0;
    let (_, cache) = handed_over(&sm80);
    let on_sm90 = compile_with(&sources, nvrtc, &cache);
    assert!(reused(&on_sm90).is_empty(), "{:?}", reused(&on_sm90));
    for c in &on_sm90 {
        assert!(c.ptx.to_src().contains(".target sm_90"), "{}", c.path);
    }

    let first = compile_with(&sources, nvrtc, &PtxCache::default());
    let (_, cache) = handed_over(&first);
    let other_nvrtc = (nvrtc.0, nvrtc.1 + 1);
    let again = compile_with(&sources, other_nvrtc, &cache);
    assert!(
        reused(&again).is_empty(),
        "another NVRTC version must compile"
    );
}

#[test]
fn a_damaged_or_swapped_cache_entry_is_never_used() {
    let Some(nvrtc) = nvrtc_or_skip("a_damaged_or_swapped_cache_entry_is_never_used") else {
        return;
    };
    let sources = cuda_sources();
    let first = compile_with(&sources, nvrtc, &PtxCache::default());
    let (snapshot, _) = handed_over(&first);
    let text = |name: &str| match snapshot.get(name) {
        Some(shared_state::Section::Scalar(Scalar::Text(t))) => t.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let saxpy = format!("{}kernels/saxpy.cu", ptx_cache::PREFIX);
    let dot = format!("{}kernels/dot.cu", ptx_cache::PREFIX);
    let mut damaged = snapshot.clone();
    // saxpy: one PTX byte changed, key line kept.
    let mut t = text(&saxpy);
    let at = t
        .find("fma")
        .or_else(|| t.find("mul"))
        .expect("an instruction");
    t.replace_range(at..at + 1, "x");
    damaged.insert_scalar(saxpy.clone(), Scalar::Text(t));
    // dot: saxpy's (intact) PTX under dot's key line.
    let dot_key = text(&dot).split_once('\n').unwrap().0.to_string();
    let saxpy_ptx = text(&saxpy).split_once('\n').unwrap().1.to_string();
    damaged.insert_scalar(dot.clone(), Scalar::Text(format!("{dot_key}\n{saxpy_ptx}")));
    // matmul: not text at all; softmax: no key line.
    damaged.insert_scalar(
        format!("{}kernels/matmul.cu", ptx_cache::PREFIX),
        Scalar::I64(7),
    );
    damaged.insert_scalar(
        format!("{}kernels/softmax.cu", ptx_cache::PREFIX),
        Scalar::Text("garbage".into()),
    );
    let cache = PtxCache::take_from(&mut damaged);
    let after = compile_with(&sources, nvrtc, &cache);
    let mut recompiled: Vec<&str> = after
        .iter()
        .filter(|c| !c.cached)
        .map(|c| c.kernel.as_str())
        .collect();
    recompiled.sort();
    assert_eq!(recompiled, ["dot", "matmul", "saxpy", "softmax"]);
    for (a, b) in first.iter().zip(&after) {
        assert_eq!(
            a.ptx.to_src(),
            b.ptx.to_src(),
            "{}: the source's own PTX",
            a.path
        );
    }
}
