//! The compute shaders: WGSL sources handed to the engine with its version
//! (`EngineContext::sources`, `shaders/NAME.wgsl` for kernel NAME), compiled
//! to SPIR-V by naga when the engine is created and checked against the
//! kernel's declaration (entry points, workgroup sizes, the binding
//! convention of [`crate::convention`]). No device is needed for any of it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use naga::back::spv;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ScalarKind, StorageAccess, TypeInner};
use shared_state::{EngineError, KernelDecl, KernelSet, SourceFile};

use crate::convention::{self, Layout, Role};

/// Where kernel NAME's shader is, relative to the module's folder.
pub fn shader_path(kernel: &str) -> String {
    format!("shaders/{kernel}.wgsl")
}

/// A kernel's shader, compiled and checked.
#[derive(Clone)]
pub struct Shader {
    pub kernel: String,
    pub path: String,
    pub layout: Layout,
    /// SPIR-V words (every entry point of the file).
    pub words: Vec<u32>,
    /// naga: parse, validate, check and write SPIR-V.
    pub elapsed: Duration,
}

/// Compiles the shader of every declared kernel that has one among
/// `sources`. A declared kernel without a shader, or whose shader is still
/// the scaffold's stub, is not implemented here (and not listed); a shader
/// without a declaration is ignored (returned in the second list, for a log
/// line). The first shader that does not compile or does not fit its
/// declaration is the error.
pub fn compile_all(
    kernels: &KernelSet,
    sources: &[SourceFile],
) -> Result<(Vec<Shader>, Vec<String>), EngineError> {
    let mut shaders = Vec::new();
    for decl in kernels.iter() {
        let path = shader_path(&decl.name);
        if let Some(source) = sources.iter().find(|s| s.path == path && !s.is_stub()) {
            shaders.push(compile(decl, source)?);
        }
    }
    let undeclared = sources
        .iter()
        .filter(|s| s.path.starts_with("shaders/") && s.path.ends_with(".wgsl"))
        .filter(|s| !s.is_stub())
        .filter(|s| !shaders.iter().any(|sh| sh.path == s.path))
        .map(|s| s.path.clone())
        .collect();
    Ok((shaders, undeclared))
}

/// Compiles one kernel's shader and checks it against the declaration.
pub fn compile(decl: &KernelDecl, source: &SourceFile) -> Result<Shader, EngineError> {
    let start = Instant::now();
    let (module, info) = parse_and_validate(&source.path, &source.text)?;
    let mut layout = Layout::of(decl);
    check_entry_points(decl, &source.path, &module)?;
    layout.written_inputs = check_bindings(decl, &layout, &source.path, &module)?;
    let options = spv::Options {
        // Vulkan 1.0 accepts SPIR-V 1.0; compute needs no coordinate fix-ups.
        lang_version: (1, 0),
        flags: spv::WriterFlags::empty(),
        ..spv::Options::default()
    };
    let words = spv::write_vec(&module, &info, &options, None).map_err(|e| {
        EngineError::bad_call(format!(
            "{}: error: SPIR-V generation failed: {e}",
            source.path
        ))
    })?;
    Ok(Shader {
        kernel: decl.name.clone(),
        path: source.path.clone(),
        layout,
        words,
        elapsed: start.elapsed(),
    })
}

/// Parses and validates WGSL; an error reads `PATH:LINE:COL: error: MESSAGE`
/// followed by naga's annotated excerpt of the source.
pub fn parse_and_validate(
    path: &str,
    text: &str,
) -> Result<(naga::Module, naga::valid::ModuleInfo), EngineError> {
    let module = naga::front::wgsl::parse_str(text).map_err(|err| {
        diagnostic(
            path,
            err.location(text),
            err.message(),
            &err.emit_to_string_with_path(text, path),
        )
    })?;
    // SHADER_FLOAT16_IN_FLOAT32: `pack2x16float` / `unpack2x16float` (f16
    // packed in u32 words, computed in f32), which SPIR-V emits as
    // GLSL.std.450 PackHalf2x16 / UnpackHalf2x16: core Vulkan, no device
    // feature. Shader f16 arithmetic (`enable f16;`) stays refused: the
    // device is not created with shaderFloat16.
    let info = Validator::new(
        ValidationFlags::all(),
        Capabilities::SHADER_FLOAT16_IN_FLOAT32,
    )
    .validate(&module)
    .map_err(|err| {
        diagnostic(
            path,
            err.location(text),
            &error_chain(err.as_inner()),
            &err.emit_to_string_with_path(text, path),
        )
    })?;
    Ok((module, info))
}

/// Every declared pass has a compute entry point of that name whose
/// `@workgroup_size` is the declared group.
fn check_entry_points(
    decl: &KernelDecl,
    path: &str,
    module: &naga::Module,
) -> Result<(), EngineError> {
    if decl.launch.passes.is_empty() {
        return Err(EngineError::bad_call(format!(
            "{path}: {} declares no [[launch]] pass, so the GPU cannot run it",
            decl.file
        )));
    }
    for (i, pass) in decl.launch.passes.iter().enumerate() {
        let Some(ep) = module
            .entry_points
            .iter()
            .find(|ep| ep.name == pass.entry && ep.stage == naga::ShaderStage::Compute)
        else {
            let found: Vec<&str> = module
                .entry_points
                .iter()
                .map(|ep| ep.name.as_str())
                .collect();
            return Err(EngineError::bad_call(format!(
                "{path}: no @compute entry point `{}` (launch pass {i} of {}); the shader has: {}",
                pass.entry,
                decl.file,
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                }
            )));
        };
        let mut want = [1u32; 3];
        want[..pass.group.len()].copy_from_slice(&pass.group);
        if ep.workgroup_size != want {
            return Err(EngineError::bad_call(format!(
                "{path}: entry point `{}` has @workgroup_size({}) but launch pass {i} of {} says group = {:?}",
                pass.entry,
                ep.workgroup_size.map(|v| v.to_string()).join(", "),
                decl.file,
                pass.group
            )));
        }
    }
    Ok(())
}

/// The shader's resource bindings follow [`crate::convention`]: group 0;
/// storage buffers of the declared element types at the storage bindings
/// (outputs and scratch writable); at the last binding a uniform struct
/// whose fields are a prefix of the convention's, by name and type.
/// Returns the inputs (storage binding indexes) declared `read_write`.
pub fn check_bindings(
    decl: &KernelDecl,
    layout: &Layout,
    path: &str,
    module: &naga::Module,
) -> Result<Vec<usize>, EngineError> {
    let err = |what: String| EngineError::bad_call(format!("{path}: {what}"));
    let mut written = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        let name = var.name.as_deref().unwrap_or("?");
        let at = format!(
            "@group({}) @binding({}) `{name}`",
            binding.group, binding.binding
        );
        if binding.group != 0 {
            return Err(err(format!(
                "{at}: kernels bind everything in group 0 (see the binding convention)"
            )));
        }
        let b = binding.binding as usize;
        if let Some((role, tensor)) = layout.storage.get(b) {
            let AddressSpace::Storage { access } = var.space else {
                return Err(err(format!(
                    "{at}: binding {b} is {} {tensor}, a storage buffer (var<storage>)",
                    role.name()
                )));
            };
            if *role == Role::Input && access.contains(StorageAccess::STORE) {
                written.push(b);
            }
            if *role != Role::Input && !access.contains(StorageAccess::STORE) {
                return Err(err(format!(
                    "{at}: {} {tensor} must be var<storage, read_write>",
                    role.name()
                )));
            }
            let kinds = convention::element_kinds(tensor.dtype).ok_or_else(|| {
                err(format!(
                    "{at}: {} {tensor}: no WGSL type holds {} elements",
                    role.name(),
                    tensor.dtype
                ))
            })?;
            match element_scalar(module, var.ty) {
                Some(s) if kinds.contains(&(s.kind, s.width)) => {}
                other => {
                    let allowed: Vec<String> =
                        kinds.iter().map(|&(k, w)| scalar_name(k, w)).collect();
                    return Err(err(format!(
                        "{at}: {} {tensor} is an array of {}, found {}",
                        role.name(),
                        allowed.join(" or "),
                        other.map_or("another type".to_string(), |s| scalar_name(s.kind, s.width))
                    )));
                }
            }
        } else if binding.binding == layout.uniform_binding() {
            if var.space != AddressSpace::Uniform {
                return Err(err(format!(
                    "{at}: binding {b} is the uniform block of dims and parameters (var<uniform>)"
                )));
            }
            check_uniform(decl, layout, module, var.ty).map_err(|m| err(format!("{at}: {m}")))?;
        } else {
            return Err(err(format!(
                "{at}: {} has {} storage bindings (0..{}) and the uniform block at {}; nothing else",
                decl.name,
                layout.storage.len(),
                layout.storage.len(),
                layout.storage.len()
            )));
        }
    }
    Ok(written)
}

fn check_uniform(
    decl: &KernelDecl,
    layout: &Layout,
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
) -> Result<(), String> {
    let expected = || {
        let fields: Vec<String> = layout
            .fields
            .iter()
            .map(|f| format!("{}: {}", f.name, f.kind.wgsl()))
            .collect();
        format!(
            "the convention for {} is struct {{ {} }} (dims in order of first appearance, then parameters and tunables)",
            decl.name,
            fields.join(", ")
        )
    };
    let TypeInner::Struct { members, .. } = &module.types[ty].inner else {
        return Err(format!(
            "the uniform block must be a struct; {}",
            expected()
        ));
    };
    if members.len() > layout.fields.len() {
        return Err(format!(
            "the uniform struct has {} fields, more than the {} of {}",
            members.len(),
            layout.fields.len(),
            expected()
        ));
    }
    for (i, (member, field)) in members.iter().zip(&layout.fields).enumerate() {
        let name = member.name.as_deref().unwrap_or("?");
        let scalar = match &module.types[member.ty].inner {
            TypeInner::Scalar(s) => Some(*s),
            _ => None,
        };
        let want = match field.kind {
            convention::FieldKind::U32 => (ScalarKind::Uint, 4),
            convention::FieldKind::F32 => (ScalarKind::Float, 4),
            convention::FieldKind::I32 => (ScalarKind::Sint, 4),
        };
        if name != field.name || scalar.map(|s| (s.kind, s.width)) != Some(want) {
            return Err(format!(
                "field {i} of the uniform struct is `{name}`; {}",
                expected()
            ));
        }
    }
    Ok(())
}

/// The scalar of an array's elements (through vectors and atomics), or of
/// the type itself.
fn element_scalar(module: &naga::Module, ty: naga::Handle<naga::Type>) -> Option<naga::Scalar> {
    let mut inner = &module.types[ty].inner;
    loop {
        match inner {
            TypeInner::Array { base, .. } => inner = &module.types[*base].inner,
            TypeInner::Scalar(s) | TypeInner::Atomic(s) => return Some(*s),
            TypeInner::Vector { scalar, .. } => return Some(*scalar),
            _ => return None,
        }
    }
}

fn scalar_name(kind: ScalarKind, width: u8) -> String {
    let prefix = match kind {
        ScalarKind::Float => "f",
        ScalarKind::Sint => "i",
        ScalarKind::Uint => "u",
        ScalarKind::Bool => return "bool".to_string(),
        _ => "?",
    };
    format!("{prefix}{}", u32::from(width) * 8)
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
) -> EngineError {
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
    EngineError::bad_call(text)
}
