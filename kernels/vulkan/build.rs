//! Compiles every `shaders/*.wgsl` to SPIR-V (`$OUT_DIR/NAME.spv`) with naga.
//!
//! A shader that does not parse or validate fails the build with a
//! compiler-style message, `shaders/NAME.wgsl:LINE:COL: error: MESSAGE`,
//! followed by naga's annotated source excerpt.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use naga::back::spv;
use naga::valid::{Capabilities, ValidationFlags, Validator};

const SHADER_DIR: &str = "shaders";

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=build.rs");
    // The directory itself: a shader added or removed triggers a rebuild.
    println!("cargo:rerun-if-changed={SHADER_DIR}");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut shaders: Vec<_> = match std::fs::read_dir(SHADER_DIR) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
            .collect(),
        Err(err) => {
            eprintln!("{SHADER_DIR}: error: cannot list the shader directory: {err}");
            return ExitCode::FAILURE;
        }
    };
    shaders.sort();
    let mut failed = false;
    for path in &shaders {
        println!("cargo:rerun-if-changed={}", path.display());
        if let Err(message) = compile(path, Path::new(&out_dir)) {
            eprintln!("{message}");
            // Also as a warning, so it shows even where stderr of build
            // scripts is folded away.
            if let Some(first) = message.lines().next() {
                println!("cargo:warning={first}");
            }
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Parses, validates and writes one shader; the error is the full diagnostic.
fn compile(path: &Path, out_dir: &Path) -> Result<(), String> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("{shown}: error: cannot read the shader: {e}"))?;
    let module = naga::front::wgsl::parse_str(&source).map_err(|err| {
        diagnostic(
            &shown,
            err.location(&source),
            err.message(),
            &err.emit_to_string_with_path(&source, &shown),
        )
    })?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::IMMEDIATES)
        .validate(&module)
        .map_err(|err| {
            diagnostic(
                &shown,
                err.location(&source),
                &error_chain(err.as_inner()),
                &err.emit_to_string_with_path(&source, &shown),
            )
        })?;
    let options = spv::Options {
        // Vulkan 1.0 accepts SPIR-V 1.0; compute needs no coordinate fix-ups.
        lang_version: (1, 0),
        flags: spv::WriterFlags::empty(),
        ..spv::Options::default()
    };
    let words = spv::write_vec(&module, &info, &options, None)
        .map_err(|e| format!("{shown}: error: SPIR-V generation failed: {e}"))?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{shown}: error: shader file name is not UTF-8"))?;
    let out = out_dir.join(format!("{stem}.spv"));
    std::fs::write(&out, bytes)
        .map_err(|e| format!("{shown}: error: cannot write {}: {e}", out.display()))
}

/// An error and its causes on one line (`a: b: c`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// `path:line:col: error: message`, then naga's rendered excerpt.
fn diagnostic(
    path: &str,
    location: Option<naga::SourceLocation>,
    message: &str,
    rendered: &str,
) -> String {
    let mut text = match location {
        Some(loc) => format!(
            "{path}:{}:{}: error: {message}",
            loc.line_number, loc.line_position
        ),
        None => format!("{path}: error: {message}"),
    };
    for line in rendered.lines() {
        let _ = write!(text, "\n    {line}");
    }
    text
}
