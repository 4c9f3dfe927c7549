//! Which inputs a kernel may write in place: by the convention an input is
//! a `const T*` ([`crate::convention`]); an input pointer declared without
//! `const` in the function's signature in the `.cu` file is taken as
//! written, as is every input of a function whose signature is not found
//! (the PTX keeps no `const`). A resident passed there loses its host copy
//! and, when another version shares its memory, is copied on the device
//! first (see [`crate::residents::Device::before_write`]).

/// Indices (among the first `inputs` parameters) that `function` in
/// `source` may write.
pub fn written_inputs(source: &str, function: &str, inputs: usize) -> Vec<usize> {
    let Some(params) = parameters(source, function) else {
        return (0..inputs).collect();
    };
    (0..inputs)
        .filter(|&i| {
            params.get(i).is_none_or(|p| {
                let before_star = p.split('*').next().unwrap_or("");
                !before_star.split_whitespace().any(|w| w == "const")
            })
        })
        .collect()
}

/// The parameter texts of the `__global__` function `name`.
fn parameters(source: &str, name: &str) -> Option<Vec<String>> {
    let mut rest = source;
    while let Some(at) = rest.find("__global__") {
        rest = &rest[at + "__global__".len()..];
        let open = rest.find('(')?;
        let head = &rest[..open];
        if head.split_whitespace().last() != Some(name) {
            continue;
        }
        let close = rest[open..].find(')')? + open;
        return Some(
            rest[open + 1..close]
                .split(',')
                .map(|p| p.trim().to_string())
                .collect(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_without_const_are_written_and_an_unknown_signature_writes_all() {
        let source = "extern \"C\" __global__ void other(float* x) {}\n\
            extern \"C\" __global__ void saxpy(const float* x, float *y, const float* __restrict__ z,\n\
            float* out, unsigned int n) {}";
        assert_eq!(written_inputs(source, "saxpy", 3), [1]);
        assert_eq!(written_inputs(source, "other", 1), [0]);
        assert_eq!(written_inputs(source, "missing", 2), [0, 1]);
        let saxpy = include_str!("../kernels/saxpy.cu");
        assert!(written_inputs(saxpy, "saxpy", 2).is_empty());
    }
}
