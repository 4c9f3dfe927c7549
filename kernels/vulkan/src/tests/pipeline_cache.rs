//! Engine creation pays only for what changed: the state handoff carries
//! the pipeline cache and the list of kernels the device built; unchanged
//! kernels are not built at creation (counted), an edited one is, a handoff
//! from another device or driver is ignored, and no cache content can make
//! a call run other code than the version's own shader.

use shared_state::{Call, Engine, Scalar, Section, Snapshot, SourceFile, Tensor};

use kernel_conformance::support::{
    self, SAXPY, assert_close, context_with, declarations, dot_scale, engine, run_value,
    saxpy_replaced,
};

use super::Vulkan;
use crate::engine::VulkanEngine;
use crate::pipeline_cache::{self, BLOB_KEY_SECTION, BLOB_SECTION, Handoff, KNOWN_SECTION};
use kernel_reference::{self as reference, test_values};

fn count(engine: &VulkanEngine, what: &str) -> i64 {
    match engine
        .info()
        .unwrap()
        .notes
        .get(&format!("pipelines/{what}"))
    {
        Some(Scalar::I64(n)) => *n,
        other => panic!("pipelines/{what}: {other:?}"),
    }
}

/// (built at creation, deferred, built at a first call)
fn counts(engine: &VulkanEngine) -> (i64, i64, i64) {
    (
        count(engine, "created_at_start"),
        count(engine, "deferred"),
        count(engine, "created_at_first_call"),
    )
}

fn shader_sources() -> Vec<SourceFile> {
    support::sources::<Vulkan>()
}

fn with_saxpy(from: &str, to: &str) -> Vec<SourceFile> {
    saxpy_replaced::<Vulkan>((from, to))
}

fn next(sources: Vec<SourceFile>, prior: &mut Snapshot) -> VulkanEngine {
    let ctx = context_with::<Vulkan>("pipeline-cache-next", &[], declarations(), sources);
    VulkanEngine::create(ctx, Some(prior))
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn check_saxpy(engine: &mut VulkanEngine, sign: f32) {
    let n = 333;
    let (x, y) = (test_values(n, 71), test_values(n, 72));
    let call = Call::new(SAXPY)
        .arg(Tensor::from_f32(&[n], x.clone()))
        .arg(Tensor::from_f32(&[n], y.clone()));
    let got = run_value(engine, call);
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| 2.0 * a + sign * b).collect();
    assert_eq!(got.as_f32().unwrap(), &want[..]);
}

fn check_dot(engine: &mut VulkanEngine) {
    let n = 1001;
    let (x, y) = (test_values(n, 73), test_values(n, 74));
    let call = Call::new("dot")
        .arg(Tensor::from_f32(&[n], x.clone()))
        .arg(Tensor::from_f32(&[n], y.clone()));
    let got = run_value(engine, call);
    assert_close(
        got.as_f32().unwrap(),
        &[reference::dot(&x, &y)],
        1e-5 * dot_scale(&x, &y),
        "dot",
    );
}

#[test]
fn unchanged_kernels_are_not_built_again_and_an_edited_one_is() {
    let Some(first) =
        engine::<Vulkan>("unchanged_kernels_are_not_built_again_and_an_edited_one_is")
    else {
        return;
    };
    let kernels = first.info().unwrap().kernels.len() as i64;
    assert_eq!(counts(&first), (kernels, 0, 0), "a first engine builds all");
    let mut state = first.export_state().unwrap();
    let blob = state.get(BLOB_SECTION).map(Section::byte_len).unwrap_or(0);
    println!("pipeline cache data handed over: {blob} bytes");

    // Same sources: nothing built at creation, each kernel at its first call.
    let mut same = next(shader_sources(), &mut state);
    assert!(
        state
            .section_names()
            .iter()
            .all(|n| !n.starts_with("cache/")),
        "the cache sections are taken, never reported as dropped"
    );
    assert_eq!(counts(&same), (0, kernels, 0));
    check_saxpy(&mut same, 1.0);
    check_dot(&mut same);
    assert_eq!(counts(&same), (0, kernels - 2, 2));

    // saxpy edited: built at creation (its errors and cost are the swap's),
    // the others still deferred; the edit's behaviour shows.
    let mut state = same.export_state().unwrap();
    drop(same);
    let mut edited = next(with_saxpy("a * x[i] + y[i]", "a * x[i] - y[i]"), &mut state);
    assert_eq!(counts(&edited), (1, kernels - 1, 0));
    check_saxpy(&mut edited, -1.0);
    check_dot(&mut edited);
    assert_eq!(counts(&edited), (1, kernels - 2, 1));

    // Back to the original saxpy: the edited engine's list does not know
    // it, so it is built again at creation.
    let mut state = edited.export_state().unwrap();
    let mut back = next(shader_sources(), &mut state);
    assert_eq!(counts(&back), (1, kernels - 1, 0));
    check_saxpy(&mut back, 1.0);
}

fn set_text(snapshot: &mut Snapshot, name: &str, edit: impl Fn(&str) -> String) {
    let text = match snapshot.get(name) {
        Some(Section::Scalar(Scalar::Text(t))) => t.clone(),
        other => panic!("{name}: {other:?}"),
    };
    snapshot.insert_scalar(name, Scalar::Text(edit(&text)));
}

#[test]
fn a_handoff_from_another_device_or_driver_is_ignored() {
    let Some(first) = engine::<Vulkan>("a_handoff_from_another_device_or_driver_is_ignored") else {
        return;
    };
    let kernels = first.info().unwrap().kernels.len() as i64;
    let mut state = first.export_state().unwrap();
    // Another driver version (same device): the list and the blob are not
    // used; every kernel is built at creation and runs correctly.
    for name in [KNOWN_SECTION, BLOB_KEY_SECTION] {
        set_text(&mut state, name, |t| t.replacen("driver=", "driver=1", 1));
    }
    let mut other = next(shader_sources(), &mut state);
    assert_eq!(counts(&other), (kernels, 0, 0));
    check_saxpy(&mut other, 1.0);
}

#[test]
fn a_damaged_or_stale_handoff_never_changes_what_runs() {
    let identity = "vendor=10005 device=0000 driver=00000001 uuid=00";
    let blob: Vec<u8> = (0..64u8).collect();
    let known = [1u64, 0xdead_beef].into_iter().collect();
    let mut snapshot = Snapshot::new("kernel-vulkan", "vulkan");
    pipeline_cache::insert(&mut snapshot, identity, blob.clone(), &known);

    let intact = Handoff::take_from(&mut snapshot.clone(), identity);
    assert_eq!(intact.blob.as_deref(), Some(&blob[..]));
    assert_eq!(intact.known, known);

    let elsewhere = Handoff::take_from(&mut snapshot.clone(), "vendor=10de device=2335");
    assert!(elsewhere.blob.is_none() && elsewhere.known.is_empty());

    let mut flipped = snapshot.clone();
    let mut bytes = blob.clone();
    bytes[40] ^= 1;
    flipped.insert_tensor(BLOB_SECTION, Tensor::from_vec(&[bytes.len()], bytes));
    set_text(&mut flipped, KNOWN_SECTION, |t| format!("{t}\nnot-hex"));
    let damaged = Handoff::take_from(&mut flipped, identity);
    assert!(
        damaged.blob.is_none(),
        "a blob that fails its hash is dropped"
    );
    assert!(damaged.known.is_empty(), "an unreadable list is dropped");

    // A stale list from a real engine: it knows the *old* saxpy. The edited
    // saxpy is built from its own SPIR-V, and dot, deferred, is right.
    let Some(first) = engine::<Vulkan>("a_damaged_or_stale_handoff_never_changes_what_runs") else {
        return;
    };
    let mut state = first.export_state().unwrap();
    drop(first);
    let mut edited = next(with_saxpy("a * x[i] + y[i]", "a * x[i] - y[i]"), &mut state);
    check_saxpy(&mut edited, -1.0);
    check_dot(&mut edited);
}

/// What a one-line saxpy edit costs the engine side (printed, never
/// asserted): export of the old engine's state, then creation of the new
/// one with the handoff, median of 5 edits; against creation without it.
#[test]
fn a_one_line_edit_reports_its_engine_swap_time() {
    let Some(mut old) = engine::<Vulkan>("a_one_line_edit_reports_its_engine_swap_time") else {
        return;
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let to = if round % 2 == 0 {
            "a * x[i] + y[i] * 1.0"
        } else {
            "a * x[i] + y[i]"
        };
        let sources = with_saxpy("a * x[i] + y[i]", to);
        let sources = if round % 2 == 0 {
            sources
        } else {
            shader_sources()
        };
        let started = std::time::Instant::now();
        let mut state = old.export_state().unwrap();
        let mut new = next(sources.clone(), &mut state);
        with.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(counts(&new).0, 1, "round {round}: only saxpy is built");
        check_saxpy(&mut new, 1.0);

        let started = std::time::Instant::now();
        let mut state = old.export_state().unwrap();
        for name in state.section_names() {
            if name.starts_with("cache/") {
                state.take(&name);
            }
        }
        let fresh = next(sources, &mut state);
        without.push(started.elapsed().as_secs_f64() * 1e3);
        drop(fresh);
        old = new;
    }
    println!(
        "one-line saxpy edit, export + engine creation: with the handoff {:.1} ms (median of 5: {:?}), without {:.1} ms ({:?})",
        median(with.clone()),
        with.iter().map(|v| v.round()).collect::<Vec<_>>(),
        median(without.clone()),
        without.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
}
