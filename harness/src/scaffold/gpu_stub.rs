//! The GPU stubs `kiln new kernel` writes: a WGSL shader and a CUDA kernel
//! whose bindings (arguments) already follow the launch convention of
//! `docs/kernel-declarations.md` ("GPU launch"; the engines check it in
//! `kernels/vulkan/src/convention.rs` and `kernels/cuda/src/convention.rs`),
//! with a grid-stride loop over the first output's elements: the user
//! writes the loop's body.

use std::fmt::Write as _;

use shared_state::{DType, GPU_STUB_MARKER, KernelDecl, Scalar, TensorDecl};

/// One scalar of the uniform block (WGSL) or argument after the pointers
/// (CUDA): the dims in order of first appearance in the inputs' shapes,
/// then the parameters (text ones are not passed), then the tunables.
struct Scalar32 {
    name: String,
    wgsl: &'static str,
    c: &'static str,
}

fn scalars(decl: &KernelDecl) -> Vec<Scalar32> {
    let mut out: Vec<Scalar32> = Vec::new();
    for dim in decl
        .inputs
        .iter()
        .flat_map(|t| t.shape.iter().filter_map(|e| e.as_dim()))
    {
        if !out.iter().any(|s| s.name == dim) {
            out.push(Scalar32 {
                name: dim.to_string(),
                wgsl: "u32",
                c: "unsigned int",
            });
        }
    }
    let params = decl.params.iter().map(|p| (&p.name, &p.default));
    let tunables = decl.tunables.iter().map(|t| (&t.name, &t.default));
    for (name, default) in params.chain(tunables) {
        let (wgsl, c) = match default {
            Scalar::F64(_) => ("f32", "float"),
            Scalar::I64(_) => ("i32", "int"),
            Scalar::Bool(_) => ("u32", "unsigned int"),
            Scalar::Text(_) => continue,
        };
        out.push(Scalar32 {
            name: name.clone(),
            wgsl,
            c,
        });
    }
    out
}

/// The tensors bound, in order: inputs, outputs, scratch.
fn tensors(decl: &KernelDecl) -> Vec<(&TensorDecl, bool)> {
    decl.inputs
        .iter()
        .map(|t| (t, false))
        .chain(decl.outputs.iter().map(|t| (t, true)))
        .chain(decl.launch.scratch.iter().map(|t| (t, true)))
        .collect()
}

/// The first output's element count as a product of `cast` dims (`{}`
/// takes the dim's name), when its shape is made of plain dims only; `one`
/// for a scalar output.
fn first_output_count(decl: &KernelDecl, cast: &str, one: &str) -> Option<String> {
    let shape = &decl.outputs.first()?.shape;
    let dims: Option<Vec<String>> = shape
        .iter()
        .map(|e| e.as_dim().map(|d| cast.replace("{}", d)))
        .collect();
    let dims = dims?;
    Some(if dims.is_empty() {
        one.to_string()
    } else {
        dims.join(" * ")
    })
}

fn group_size(decl: &KernelDecl) -> String {
    decl.launch.passes.first().map_or("256".to_string(), |p| {
        p.group
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// A WGSL element type for a tensor of `dtype`, and a note when its
/// elements are packed into 32-bit words (or cannot be bound).
fn wgsl_element(dtype: DType) -> (&'static str, Option<&'static str>) {
    match dtype {
        DType::F32 => ("f32", None),
        DType::I32 => ("i32", None),
        DType::U32 => ("u32", None),
        DType::F16 => ("u32", Some("two f16 per word: unpack2x16float")),
        DType::BF16 => (
            "u32",
            Some("two bf16 per word (the high 16 bits of an f32)"),
        ),
        DType::I8 | DType::U8 => ("u32", Some("four bytes per word")),
        DType::F64 | DType::I64 => ("u32", Some("64-bit tensors cannot be bound on Vulkan")),
    }
}

fn c_element(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float",
        DType::F64 => "double",
        DType::I32 => "int",
        DType::I64 => "long long",
        DType::U32 => "unsigned int",
        DType::U8 => "unsigned char",
        DType::I8 => "signed char",
        // Raw 16-bit words (NVRTC's wheel ships no cuda_fp16.h).
        DType::F16 | DType::BF16 => "unsigned short",
    }
}

/// The stub's first lines: the marker, the signature, what to do.
fn header(decl: &KernelDecl, what: &str) -> String {
    format!(
        "{GPU_STUB_MARKER}: not listed as implemented until this line is removed.\n\
         // {sig}\n\
         //\n\
         // TODO: write the loop's body. {what} the GPU launch convention of\n\
         // docs/kernel-declarations.md (\"GPU launch\"): inputs, outputs, then the dims and\n\
         // parameters. The launch sizes are in kernels/declarations/{name}.toml.\n",
        sig = decl.signature(),
        name = decl.name
    )
}

/// `kernels/vulkan/shaders/NAME.wgsl`.
pub fn wgsl_stub(decl: &KernelDecl) -> String {
    let mut s = header(decl, "The bindings follow");
    let scalars = scalars(decl);
    if !scalars.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "struct Params {{");
        for f in &scalars {
            let _ = writeln!(s, "    {}: {},", f.name, f.wgsl);
        }
        let _ = writeln!(s, "}}");
    }
    let _ = writeln!(s);
    let tensors = tensors(decl);
    for (i, (t, written)) in tensors.iter().enumerate() {
        let access = if *written { "read_write" } else { "read" };
        let (element, note) = wgsl_element(t.dtype);
        let note = note.map_or(String::new(), |n| format!(" // {t}: {n}"));
        let _ = writeln!(
            s,
            "@group(0) @binding({i}) var<storage, {access}> {}: array<{element}>;{note}",
            t.name
        );
    }
    if !scalars.is_empty() {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<uniform> params: Params;",
            tensors.len()
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "@compute @workgroup_size({})", group_size(decl));
    let _ = writeln!(s, "fn main(");
    let _ = writeln!(s, "    @builtin(global_invocation_id) gid: vec3<u32>,");
    let _ = writeln!(s, "    @builtin(num_workgroups) groups: vec3<u32>,");
    let _ = writeln!(s, ") {{");
    match first_output_count(decl, "params.{}", "1u").filter(|_| !scalars.is_empty()) {
        Some(count) => {
            let _ = writeln!(s, "    let count = {count};");
            let _ = writeln!(
                s,
                "    let stride = groups.x * {}u;",
                decl.launch
                    .passes
                    .first()
                    .and_then(|p| p.group.first())
                    .copied()
                    .unwrap_or(256)
            );
            let _ = writeln!(s, "    for (var i = gid.x; i < count; i += stride) {{");
            let _ = writeln!(
                s,
                "        // {}[i] = ...;",
                decl.outputs.first().map_or("out", |t| t.name.as_str())
            );
            let _ = writeln!(s, "    }}");
        }
        None => {
            let _ = writeln!(s, "    // One invocation per element of the first output.");
        }
    }
    let _ = writeln!(s, "}}");
    s
}

/// `kernels/cuda/kernels/NAME.cu`: the entry `main` is the function named
/// after the kernel.
pub fn cuda_stub(decl: &KernelDecl) -> String {
    let mut s = header(decl, "Arguments follow");
    let mut arguments: Vec<String> = tensors(decl)
        .iter()
        .map(|(t, written)| {
            let constness = if *written { "" } else { "const " };
            format!("{constness}{}* {}", c_element(t.dtype), t.name)
        })
        .collect();
    arguments.extend(scalars(decl).iter().map(|f| format!("{} {}", f.c, f.name)));
    let _ = writeln!(
        s,
        "extern \"C\" __global__ void {}({}) {{",
        decl.name,
        arguments.join(", ")
    );
    match first_output_count(decl, "(unsigned long long){}", "1ull") {
        Some(count) => {
            let _ = writeln!(s, "    unsigned long long count = {count};");
            let _ = writeln!(
                s,
                "    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;"
            );
            let _ = writeln!(
                s,
                "    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;\n         i += stride) {{"
            );
            let _ = writeln!(
                s,
                "        // {}[i] = ...;",
                decl.outputs.first().map_or("out", |t| t.name.as_str())
            );
            let _ = writeln!(s, "    }}");
        }
        None => {
            let _ = writeln!(s, "    // One thread per element of the first output.");
        }
    }
    let _ = writeln!(s, "}}");
    s
}
