//! Generated workloads: `--kernel matmul --shape 512x512x512 --seed 7`, and
//! the bundled default workload that covers every standard kernel.

use std::fmt;

use shared_state::kernels::{DOT, MATMUL, SAXPY, SOFTMAX, STENCIL2D};
use shared_state::{Call, EngineError, Scalar, Tensor};

use super::{Step, Workload};
use crate::workload::reference;

/// What to generate: one standard kernel at one shape, inputs from a seed.
///
/// Shapes per kernel: `saxpy`/`dot` `N`; `matmul` `MxKxN`; `stencil2d`
/// `HxW` or `HxWxSTEPS` (a resident grid iterated STEPS times, default 1,
/// through `store_as`); `softmax` `ROWSxCOLS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenSpec {
    pub kernel: String,
    pub shape: Vec<usize>,
    pub seed: u64,
}

/// A spec that does not make sense, or a reference run that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateError(pub String);

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GenerateError {}

impl From<EngineError> for GenerateError {
    fn from(e: EngineError) -> Self {
        GenerateError(format!("reference: {e}"))
    }
}

/// Largest tensor a generated workload may hold (elements), so a typo in a
/// shape does not try to fill all memory.
pub const MAX_ELEMENTS: usize = 1 << 30;

impl GenSpec {
    /// Parses `kernel`, a shape like `512x512x512` and a seed, checking the
    /// shape's rank against the kernel.
    pub fn parse(kernel: &str, shape: &str, seed: u64) -> Result<GenSpec, GenerateError> {
        let dims = shape
            .split('x')
            .map(|d| {
                d.trim().parse::<usize>().map_err(|_| {
                    GenerateError(format!(
                        "shape {shape:?}: {d:?} is not a whole number (write e.g. 512x512x512)"
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let ranks: &[usize] = match kernel {
            SAXPY | DOT => &[1],
            MATMUL => &[3],
            STENCIL2D => &[2, 3],
            SOFTMAX => &[2],
            other => {
                return Err(GenerateError(format!(
                    "no kernel {other:?} to generate (known: saxpy, dot, matmul, stencil2d, softmax)"
                )));
            }
        };
        if !ranks.contains(&dims.len()) {
            let want = match kernel {
                SAXPY | DOT => "N",
                MATMUL => "MxKxN",
                STENCIL2D => "HxW or HxWxSTEPS",
                _ => "ROWSxCOLS",
            };
            return Err(GenerateError(format!(
                "{kernel} takes a shape {want}, got {shape:?}"
            )));
        }
        Ok(GenSpec {
            kernel: kernel.to_string(),
            shape: dims,
            seed,
        })
    }

    /// Parses the CLI form `--kernel K --shape S [--seed N]` (also
    /// `--kernel=K`); the seed defaults to 1.
    pub fn from_args<I, S>(args: I) -> Result<GenSpec, GenerateError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (mut kernel, mut shape, mut seed) = (None, None, 1u64);
        let mut args = args.into_iter().map(|a| a.as_ref().to_string());
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| GenerateError(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--kernel" => kernel = Some(value()?),
                "--shape" => shape = Some(value()?),
                "--seed" => {
                    let v = value()?;
                    seed = v.parse().map_err(|_| {
                        GenerateError(format!("--seed {v:?} is not a whole number"))
                    })?;
                }
                other => {
                    return Err(GenerateError(format!(
                        "unknown argument {other:?} (expected --kernel, --shape, --seed)"
                    )));
                }
            }
        }
        let kernel = kernel.ok_or_else(|| GenerateError("--kernel is required".into()))?;
        let shape = shape.ok_or_else(|| GenerateError("--shape is required".into()))?;
        GenSpec::parse(&kernel, &shape, seed)
    }

    /// `matmul-512x512x512-s7`: a name for the generated workload.
    pub fn name(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}-{}-s{}", self.kernel, dims.join("x"), self.seed)
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same inputs on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`, on a 2^-24 grid (exact in f32).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `shape` of uniform values in `[lo, hi)`.
    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|_| self.uniform(lo, hi)).collect())
    }
}

fn checked_elements(spec: &GenSpec, dims: &[usize]) -> Result<(), GenerateError> {
    match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(GenerateError(format!(
            "{} {}: a tensor of more than {MAX_ELEMENTS} elements is too large to generate",
            spec.kernel,
            spec.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        ))),
    }
}

/// Generates the workload `spec` describes, with expected outputs from the
/// reference backend.
pub fn generate(spec: &GenSpec) -> Result<Workload, GenerateError> {
    let mut rng = Rng::new(spec.seed);
    let mut w = Workload::new(spec.name());
    let s = &spec.shape;
    match spec.kernel.as_str() {
        SAXPY | DOT => {
            checked_elements(spec, &[s[0]])?;
            let mut call = Call::new(&spec.kernel)
                .arg(rng.tensor(&[s[0]], -1.0, 1.0))
                .arg(rng.tensor(&[s[0]], -1.0, 1.0));
            if spec.kernel == SAXPY {
                call = call.param("a", Scalar::F64(1.5));
            }
            w.call(call, None);
        }
        MATMUL => {
            checked_elements(spec, &[s[0], s[1]])?;
            checked_elements(spec, &[s[1], s[2]])?;
            checked_elements(spec, &[s[0], s[2]])?;
            w.call(
                Call::new(MATMUL)
                    .arg(rng.tensor(&[s[0], s[1]], -1.0, 1.0))
                    .arg(rng.tensor(&[s[1], s[2]], -1.0, 1.0)),
                None,
            );
        }
        STENCIL2D => {
            checked_elements(spec, &s[..2])?;
            let steps = s.get(2).copied().unwrap_or(1);
            if steps == 0 {
                return Err(GenerateError(
                    "stencil2d: STEPS (the third dimension of HxWxSTEPS) must be at least 1".into(),
                ));
            }
            w.load("grid", rng.tensor(&s[..2], 0.0, 1.0));
            for _ in 0..steps {
                w.call(
                    Call::new(STENCIL2D)
                        .resident("grid")
                        .param("alpha", Scalar::F64(0.1))
                        .store_as("grid"),
                    None,
                );
            }
        }
        SOFTMAX => {
            checked_elements(spec, s)?;
            w.call(Call::new(SOFTMAX).arg(rng.tensor(s, -4.0, 4.0)), None);
        }
        other => return Err(GenerateError(format!("no kernel {other:?} to generate"))),
    }
    fill_last_expected(&mut w)?;
    Ok(w)
}

/// Fills the expected output of every call that returns a value, and of the
/// last call that stores into each resident (intermediate states of an
/// iterated resident are not kept: the last one checks them all).
fn fill_last_expected(w: &mut Workload) -> Result<(), GenerateError> {
    let outputs = reference::expected_outputs(w)?;
    let mut last_store = std::collections::BTreeMap::new();
    for (i, step) in w.steps.iter().enumerate() {
        if let Step::Call { call, .. } = step {
            if let Some(name) = &call.store_as {
                last_store.insert(name.clone(), i);
            }
        }
    }
    for (i, (step, out)) in w.steps.iter_mut().zip(outputs).enumerate() {
        if let Step::Call { call, expected } = step {
            let keep = match &call.store_as {
                None => true,
                Some(name) => last_store.get(name) == Some(&i),
            };
            if keep {
                *expected = out;
            }
        }
    }
    Ok(())
}

/// The bundled default workload: every standard kernel at sizes that take
/// tens of milliseconds on the CPU backend, with a resident argument
/// (`weights`) and a resident grid iterated through `store_as`.
///
/// Steps: load `weights` (256x256) and `grid` (512x512); saxpy 1M; dot 1M;
/// matmul 256x256 @ `weights`; four stencil2d steps on `grid`; softmax
/// 512x1024. Every call has an expected output (the stencil's on its last
/// step).
pub fn default_workload() -> Workload {
    let mut rng = Rng::new(0x6b69_6c6e); // "kiln"
    let mut w = Workload::new("default");
    let n = 1 << 20;
    w.load("weights", rng.tensor(&[256, 256], -1.0, 1.0));
    w.load("grid", rng.tensor(&[512, 512], 0.0, 1.0));
    w.call(
        Call::new(SAXPY)
            .arg(rng.tensor(&[n], -1.0, 1.0))
            .arg(rng.tensor(&[n], -1.0, 1.0))
            .param("a", Scalar::F64(1.5)),
        None,
    );
    w.call(
        Call::new(DOT)
            .arg(rng.tensor(&[n], -1.0, 1.0))
            .arg(rng.tensor(&[n], -1.0, 1.0)),
        None,
    );
    w.call(
        Call::new(MATMUL)
            .arg(rng.tensor(&[256, 256], -1.0, 1.0))
            .resident("weights"),
        None,
    );
    for _ in 0..4 {
        w.call(
            Call::new(STENCIL2D)
                .resident("grid")
                .param("alpha", Scalar::F64(0.1))
                .store_as("grid"),
            None,
        );
    }
    w.call(
        Call::new(SOFTMAX).arg(rng.tensor(&[512, 1024], -4.0, 4.0)),
        None,
    );
    fill_last_expected(&mut w).expect("the default workload runs on the reference");
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_form_and_checks_ranks() {
        let spec =
            GenSpec::from_args(["--kernel", "matmul", "--shape", "4x5x6", "--seed", "7"]).unwrap();
        assert_eq!(spec.shape, vec![4, 5, 6]);
        assert_eq!(spec.seed, 7);
        assert_eq!(spec.name(), "matmul-4x5x6-s7");
        let spec = GenSpec::from_args(["--kernel=stencil2d", "--shape=8x9"]).unwrap();
        assert_eq!((spec.shape.len(), spec.seed), (2, 1));
        let err = GenSpec::parse(MATMUL, "4x5", 1).unwrap_err();
        assert_eq!(err.0, "matmul takes a shape MxKxN, got \"4x5\"");
        let err = GenSpec::parse(SAXPY, "12a", 1).unwrap_err();
        assert!(err.0.contains("\"12a\" is not a whole number"), "{err}");
        let err = GenSpec::parse("fft", "8", 1).unwrap_err();
        assert!(err.0.starts_with("no kernel \"fft\""), "{err}");
        let err = GenSpec::from_args(["--kernel", "dot"]).unwrap_err();
        assert_eq!(err.0, "--shape is required");
        let err = GenSpec::from_args(["--kernel", "dot", "--shape"]).unwrap_err();
        assert_eq!(err.0, "--shape needs a value");
        let err = generate(&GenSpec::parse(STENCIL2D, "4x4x0", 1).unwrap()).unwrap_err();
        assert!(err.0.contains("STEPS"), "{err}");
        let err = generate(&GenSpec::parse(SAXPY, "99999999999", 1).unwrap()).unwrap_err();
        assert!(err.0.contains("too large"), "{err}");
    }

    #[test]
    fn same_seed_same_workload_other_seed_other_inputs() {
        let spec = GenSpec::parse(MATMUL, "3x4x5", 7).unwrap();
        let a = generate(&spec).unwrap();
        assert_eq!(a, generate(&spec).unwrap());
        let b = generate(&GenSpec { seed: 8, ..spec }).unwrap();
        assert_ne!(a, b);
        let (call, expected) = a.calls().next().unwrap();
        assert_eq!(call.args.len(), 2);
        assert_eq!(expected.unwrap().shape(), &[3, 5]);
    }

    #[test]
    fn stencil_iterates_a_resident_grid() {
        let w = generate(&GenSpec::parse(STENCIL2D, "6x7x3", 1).unwrap()).unwrap();
        assert!(matches!(&w.steps[0], Step::Load { name, .. } if name == "grid"));
        assert_eq!(w.call_count(), 3);
        let expected: Vec<bool> = w.calls().map(|(_, e)| e.is_some()).collect();
        assert_eq!(expected, [false, false, true]);
        assert!(
            w.calls()
                .all(|(c, _)| c.store_as.as_deref() == Some("grid"))
        );
    }

    #[test]
    fn default_workload_covers_every_kernel() {
        let w = default_workload();
        assert_eq!(w.kernels_used().len(), 5);
        assert!(w.steps.iter().any(|s| matches!(s, Step::Load { .. })));
        assert!(w.calls().any(|(c, _)| c.store_as.is_some()));
        // every value-returning call is checked, and the iterated grid too
        assert_eq!(w.calls().filter(|(_, e)| e.is_some()).count(), 5);
    }
}
