//! Kernel sources come with the version (`EngineContext::sources`) and
//! kernels with their declarations: compiled and checked when the engine is
//! created, with clear errors. A kernel is added by a declaration and a
//! source file, with no dispatch code; an edit takes effect in the next
//! engine, with the state, and a broken edit is refused with file and line
//! while the old engine keeps serving.

use std::time::Instant;

use shared_state::{Call, Engine, ErrorKind, KernelDecl, KernelSet, Output, Scalar, SourceFile};

use kernel_reference::{self as reference, test_values};

use crate::Backend;
use crate::support::{
    BUNDLED_KERNELS, PREFIX_SUM, SAXPY, compiler_or_skip, context_with, decl, declarations, engine,
    engine_from, run_f32, saxpy_replaced, skip, source, source_path, sources, t1, t2,
};

/// Two outputs, an integer, a float and a bool parameter, a 2-D dim list:
/// the whole convention, through one new kernel written by each backend
/// ([`Backend::SPLIT_SOURCE`]). Its parameters come in declaration order
/// (the file's: scale, shift, absolute).
pub const SPLIT_DECL: &str = r#"
summary = "pos = max(x + bias, 0) * scale + shift; neg = min(x + bias, 0) (or |min| if absolute)"
inputs = ["x: f32[rows, cols]", "bias: f32[cols]"]
outputs = ["pos: f32[rows, cols]", "neg: f32[rows, cols]"]
params = { scale = 1.5, shift = 2, absolute = false }

[[launch]]
entry = "main"
group = [32]
workgroups = ["ceil_div(rows*cols, 32)"]
"#;

/// The workspace's declarations and split's, and the module's sources and
/// split's.
fn with_split<B: Backend>() -> (KernelSet, Vec<SourceFile>) {
    let mut decls: Vec<KernelDecl> = declarations().iter().cloned().collect();
    decls.push(decl("split", SPLIT_DECL));
    let mut sources = sources::<B>();
    sources.push(source(&source_path::<B>("split"), B::SPLIT_SOURCE));
    (KernelSet::new(decls), sources)
}

/// The module's sources with saxpy's broken (it refers to an undeclared
/// `z`), saxpy's path and the line of the break.
fn broken_saxpy<B: Backend>() -> (Vec<SourceFile>, String, usize) {
    let path = source_path::<B>(SAXPY);
    let broken = saxpy_replaced::<B>(B::SAXPY.broken);
    let line = broken
        .iter()
        .find(|s| s.path == path)
        .unwrap()
        .text
        .lines()
        .position(|l| l.contains(B::SAXPY.broken.1))
        .expect("the broken line")
        + 1;
    (broken, path, line)
}

pub fn every_source_compiles_and_fits_its_declaration<B: Backend>() {
    if !compiler_or_skip::<B>("every_source_compiles_and_fits_its_declaration") {
        return;
    }
    let (compiled, undeclared) =
        B::compile(&declarations(), &sources::<B>()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        undeclared.is_empty(),
        "sources without a declaration: {undeclared:?}"
    );
    assert_eq!(compiled, BUNDLED_KERNELS);
}

/// A source that is still `kiln new kernel`'s stub (it compiles) is not
/// listed as implemented, nor as undeclared; once its stub line is deleted
/// it is compiled and checked like any source.
pub fn a_stub_source_is_not_listed_until_its_stub_line_is_removed<B: Backend>() {
    if !compiler_or_skip::<B>("a_stub_source_is_not_listed_until_its_stub_line_is_removed") {
        return;
    }
    let kernels = declarations();
    let path = source_path::<B>(SAXPY);
    let saxpy = sources::<B>()
        .into_iter()
        .find(|s| s.path == path)
        .expect("saxpy's source");
    let stub = format!(
        "{}: not listed as implemented until this line is removed.\n{}",
        shared_state::GPU_STUB_MARKER,
        saxpy.text
    );
    let (compiled, undeclared) = B::compile(&kernels, &[source(&path, &stub)]).unwrap();
    assert!(compiled.is_empty(), "a stub is not implemented");
    assert!(
        undeclared.is_empty(),
        "a stub is not undeclared: {undeclared:?}"
    );
    let written = stub.split_once('\n').expect("two lines").1;
    let (compiled, _) = B::compile(&kernels, &[source(&path, written)]).unwrap();
    assert_eq!(compiled, [SAXPY], "the written source is listed");
}

/// A declared kernel without a source is simply not compiled; a source
/// without a declaration is listed apart; with its declaration it compiles.
pub fn a_source_without_a_declaration_is_listed_apart<B: Backend>() {
    if !compiler_or_skip::<B>("a_source_without_a_declaration_is_listed_apart") {
        return;
    }
    let split = source_path::<B>("split");
    let mut files = sources::<B>();
    files.retain(|s| s.path != source_path::<B>(PREFIX_SUM));
    files.push(source(&split, B::SPLIT_SOURCE));
    let (compiled, undeclared) = B::compile(&declarations(), &files).unwrap();
    let want: Vec<&str> = BUNDLED_KERNELS
        .into_iter()
        .filter(|k| *k != PREFIX_SUM)
        .collect();
    assert_eq!(compiled, want);
    assert_eq!(undeclared, [split.as_str()]);
    let (compiled, undeclared) = B::compile(
        &KernelSet::new([decl("split", SPLIT_DECL)]),
        &[source(&split, B::SPLIT_SOURCE)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(compiled, ["split"]);
    assert!(undeclared.is_empty(), "{undeclared:?}");
}

/// A source that does not compile is refused, naming its file and line:
/// by the compiler alone (no device needed) and at engine creation.
pub fn a_broken_source_is_refused_naming_file_and_line<B: Backend>() {
    const TEST: &str = "a_broken_source_is_refused_naming_file_and_line";
    let (broken, path, line) = broken_saxpy::<B>();
    let check = |err: &shared_state::EngineError| {
        assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
        assert!(
            B::names_file_and_line(&err.message, &path, line),
            "no {path} and line {line}: {err}"
        );
        assert!(err.message.contains('z'), "names what is wrong: {err}");
    };
    if compiler_or_skip::<B>(TEST) {
        match B::compile(&declarations(), &broken) {
            Ok(_) => panic!("a broken {path} compiled"),
            Err(err) => check(&err),
        }
    }
    match (B::CREATE)(context_with::<B>(TEST, &[], declarations(), broken), None) {
        Ok(_) => panic!("a broken {path} was accepted"),
        // The backend opens its device before it compiles.
        Err(err) if err.kind == ErrorKind::Unavailable => skip::<B>(TEST, &err),
        Err(err) => check(&err),
    }
}

pub fn a_new_kernel_is_a_declaration_and_a_source<B: Backend>() {
    const TEST: &str = "a_new_kernel_is_a_declaration_and_a_source";
    let (kernels, files) = with_split::<B>();
    let Some(mut e) = engine_from::<B>(TEST, context_with::<B>(TEST, &[], kernels, files), None)
    else {
        return;
    };
    assert!(e.info().unwrap().kernels.contains(&"split".to_string()));
    let (rows, cols) = (7, 33);
    let x = test_values(rows * cols, 41);
    let bias = test_values(cols, 42);
    let want = |scale: f32, shift: f32, absolute: bool| {
        let (mut p, mut n) = (Vec::new(), Vec::new());
        for (i, &v) in x.iter().enumerate() {
            let v = v + bias[i % cols];
            p.push(v.max(0.0) * scale + shift);
            let m = v.min(0.0);
            n.push(if absolute { m.abs() } else { m });
        }
        (p, n)
    };
    for (params, (scale, shift, absolute)) in [
        (vec![], (1.5, 2.0, false)),
        (vec![("shift", Scalar::I64(-1))], (1.5, -1.0, false)),
        (
            vec![
                ("scale", Scalar::F64(-0.5)),
                ("shift", Scalar::I64(-3)),
                ("absolute", Scalar::Bool(true)),
            ],
            (-0.5, -3.0, true),
        ),
    ] {
        let mut call = Call::new("split")
            .arg(t2(rows, cols, x.clone()))
            .arg(t1(bias.clone()));
        for (k, v) in params {
            call = call.param(k, v);
        }
        let Output::Values(outs) = e.run(call).unwrap() else {
            panic!("two outputs come back as Values");
        };
        let (p, n) = want(scale, shift, absolute);
        assert_eq!(outs.len(), 2);
        assert_eq!(outs[0].shape(), &[rows, cols]);
        assert_eq!(outs[0].as_f32().unwrap(), &p[..], "pos");
        assert_eq!(outs[1].as_f32().unwrap(), &n[..], "neg");
    }
    let err = e
        .run(
            Call::new("split")
                .arg(t2(1, 1, vec![1.0]))
                .arg(t1(vec![1.0]))
                .store_as("both"),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message
            .contains("store_as needs a kernel with one output"),
        "{err}"
    );
    let err = e
        .run(
            Call::new("split")
                .arg(t2(1, 1, vec![1.0]))
                .arg(t1(vec![1.0]))
                .param("shift", Scalar::I64(1 << 40)),
        )
        .unwrap_err();
    assert!(err.message.contains(B::PARAM_TOO_LARGE), "{err}");
}

pub fn a_declared_kernel_without_a_source_is_not_listed_or_run<B: Backend>() {
    const TEST: &str = "a_declared_kernel_without_a_source_is_not_listed_or_run";
    let missing = source_path::<B>(PREFIX_SUM);
    let files: Vec<_> = sources::<B>()
        .into_iter()
        .filter(|s| s.path != missing)
        .collect();
    let ctx = context_with::<B>(TEST, &[], declarations(), files);
    let Some(mut e) = engine_from::<B>(TEST, ctx, None) else {
        return;
    };
    let info = e.info().unwrap();
    assert!(
        !info.kernels.contains(&PREFIX_SUM.to_string()),
        "{:?}",
        info.kernels
    );
    assert!(info.kernels.contains(&SAXPY.to_string()));
    let err = e
        .run(Call::new(PREFIX_SUM).arg(t1(vec![1.0; 3])))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    assert_eq!(
        err.message,
        format!(
            "prefix_sum is declared but not implemented on {} (no {missing} among the sources)",
            B::NAME
        )
    );
    let err = e.run(Call::new("relu")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    assert!(
        err.message.starts_with("no kernel \"relu\" is declared"),
        "{err}"
    );
}

/// An edit of a source is a new engine created with the edited source and
/// the old engine's state (what the host does on a save, without cargo); a
/// broken edit fails that creation and leaves the old engine serving.
pub fn an_edited_source_takes_effect_in_the_next_engine_with_the_state<B: Backend>() {
    const TEST: &str = "an_edited_source_takes_effect_in_the_next_engine_with_the_state";
    let Some(mut old) = engine::<B>(TEST) else {
        return;
    };
    let n = 3000;
    let (x, y) = (test_values(n, 61), test_values(n, 62));
    old.put_resident("x", t1(x.clone())).unwrap();
    old.put_resident("y", t1(y.clone())).unwrap();
    let call = Call::new(SAXPY).resident("x").resident("y");
    let before = run_f32(&mut old, call.clone());
    assert_eq!(before, reference::saxpy(2.0, &x, &y));

    // Broken: the new engine is not created, the old one still serves.
    let mut snapshot = old.export_state().unwrap();
    let (broken, path, line) = broken_saxpy::<B>();
    let ctx = context_with::<B>("broken", &[], declarations(), broken);
    let err = match (B::CREATE)(ctx, Some(&mut snapshot)) {
        Ok(_) => panic!("a broken {path} was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
    assert!(
        B::names_file_and_line(&err.message, &path, line),
        "no {path} and line {line}: {err}"
    );
    assert_eq!(run_f32(&mut old, call.clone()), before);

    // Fixed: the edit's behaviour, on the carried state.
    let mut snapshot = old.export_state().unwrap();
    let started = Instant::now();
    let ctx = context_with::<B>(
        "edited",
        &[],
        declarations(),
        saxpy_replaced::<B>(B::SAXPY.subtract),
    );
    let (mut new, _) = (B::CREATE)(ctx, Some(&mut snapshot)).unwrap_or_else(|e| panic!("{e}"));
    let compile_ms: f64 = new
        .info()
        .unwrap()
        .notes
        .iter()
        .filter(|(k, _)| k.starts_with("compile_ms/"))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    println!(
        "engine with an edited {path} created in {:.1} ms (compile {compile_ms:.1} ms for all files)",
        started.elapsed().as_secs_f64() * 1e3,
    );
    drop(old);
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| 2.0 * a - b).collect();
    assert_eq!(run_f32(&mut new, call), want);
}
