//! The workload model: a named sequence of steps ([`Step::Load`] a
//! resident buffer, [`Step::Call`] a kernel with its trials). The parent
//! module re-exports it; the files beside this one import it from here.

use std::collections::BTreeSet;

use kiln_stats::bytes;
use shared_state::{Arg, Call, Tensor};

/// A named sequence of steps, replayed in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: String,
    pub steps: Vec<Step>,
}

/// One step of a workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Load (or replace) the named resident buffer.
    Load { name: String, tensor: Tensor },
    /// Run a kernel (on one or several trials).
    Call(CallStep),
}

/// A kernel call with its trials.
///
/// Trial 0 is `call` itself; each entry of `trials` runs the same call with
/// its tensor arguments replaced, in order, by the trial's `inputs`
/// (resident arguments stay). The call passes only if every trial passes:
/// a kernel that returns zeros, or that is right on one input set only,
/// fails.
#[derive(Clone, Debug, PartialEq)]
pub struct CallStep {
    pub call: Call,
    /// Expected outputs of trial 0, one per declared output (empty: none
    /// stored). For a call with `store_as`, the value the resident holds
    /// after the call (read back with `Engine::read_resident`).
    pub expected: Vec<Tensor>,
    /// Further trials.
    pub trials: Vec<Trial>,
    /// The declaration signature the call was recorded for
    /// (`KernelDecl::signature`): a call whose kernel's signature has
    /// changed since is reported as stale and skipped, not failed.
    pub signature: Option<String>,
    /// The command that recorded the call (shown with a stale call, to
    /// re-record it).
    pub recorded_by: Option<String>,
}

/// One more set of inputs for a call.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// Replaces the call's tensor arguments, in order.
    pub inputs: Vec<Tensor>,
    /// Expected outputs (empty: none stored).
    pub expected: Vec<Tensor>,
}

impl CallStep {
    /// A call with no trials, no signature.
    pub fn new(call: Call, expected: Vec<Tensor>) -> CallStep {
        CallStep {
            call,
            expected,
            trials: Vec::new(),
            signature: None,
            recorded_by: None,
        }
    }

    /// Number of trials (at least 1: the call itself).
    pub fn trial_count(&self) -> usize {
        1 + self.trials.len()
    }

    /// The call of trial `i` (0: the call itself) and its stored expected
    /// outputs.
    pub fn trial(&self, i: usize) -> (Call, &[Tensor]) {
        if i == 0 {
            return (self.call.clone(), &self.expected);
        }
        let trial = &self.trials[i - 1];
        let mut call = self.call.clone();
        let mut inputs = trial.inputs.iter();
        for arg in &mut call.args {
            if let Arg::Tensor(t) = arg {
                if let Some(next) = inputs.next() {
                    *t = next.clone();
                }
            }
        }
        (call, &trial.expected)
    }
}

impl Workload {
    pub fn new(name: impl Into<String>) -> Workload {
        Workload {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Appends a [`Step::Load`].
    pub fn load(&mut self, name: &str, tensor: Tensor) -> &mut Workload {
        self.steps.push(Step::Load {
            name: name.to_string(),
            tensor,
        });
        self
    }

    /// Appends a [`Step::Call`] with one trial and at most one expected
    /// output.
    pub fn call(&mut self, call: Call, expected: Option<Tensor>) -> &mut Workload {
        self.steps.push(Step::Call(CallStep::new(
            call,
            expected.into_iter().collect(),
        )));
        self
    }

    /// Appends a [`Step::Call`].
    pub fn call_step(&mut self, step: CallStep) -> &mut Workload {
        self.steps.push(Step::Call(step));
        self
    }

    /// Bytes of input data: resident loads and tensors passed with calls
    /// (expected outputs are not inputs and are not counted).
    pub fn input_bytes(&self) -> u64 {
        self.steps
            .iter()
            .map(|step| match step {
                Step::Load { tensor, .. } => tensor.byte_len() as u64,
                Step::Call(c) => {
                    let first: u64 = c
                        .call
                        .args
                        .iter()
                        .map(|a| match a {
                            Arg::Tensor(t) => t.byte_len() as u64,
                            Arg::Resident(_) => 0,
                        })
                        .sum();
                    let trials: u64 = c
                        .trials
                        .iter()
                        .flat_map(|t| &t.inputs)
                        .map(|t| t.byte_len() as u64)
                        .sum();
                    first + trials
                }
            })
            .sum()
    }

    /// Bytes of expected outputs.
    pub fn expected_bytes(&self) -> u64 {
        self.steps
            .iter()
            .map(|step| match step {
                Step::Call(c) => c
                    .expected
                    .iter()
                    .chain(c.trials.iter().flat_map(|t| &t.expected))
                    .map(|t| t.byte_len() as u64)
                    .sum(),
                Step::Load { .. } => 0,
            })
            .sum()
    }

    /// Number of kernel calls.
    pub fn call_count(&self) -> usize {
        self.calls().count()
    }

    /// The calls in order, with the first expected output of trial 0.
    pub fn calls(&self) -> impl Iterator<Item = (&Call, Option<&Tensor>)> {
        self.call_steps().map(|c| (&c.call, c.expected.first()))
    }

    /// The call steps in order.
    pub fn call_steps(&self) -> impl Iterator<Item = &CallStep> {
        self.steps.iter().filter_map(|step| match step {
            Step::Call(c) => Some(c),
            Step::Load { .. } => None,
        })
    }

    /// Names of the kernels the workload calls, sorted, each once.
    pub fn kernels_used(&self) -> BTreeSet<String> {
        self.calls().map(|(call, _)| call.kernel.clone()).collect()
    }

    /// Resident buffers the calls read before any step of the workload
    /// loads or stores them: they must already be in the engine (state
    /// carried over from an earlier run), or the replay fails.
    pub fn external_residents(&self) -> BTreeSet<String> {
        let mut defined = BTreeSet::new();
        let mut external = BTreeSet::new();
        for step in &self.steps {
            match step {
                Step::Load { name, .. } => {
                    defined.insert(name.clone());
                }
                Step::Call(CallStep { call, .. }) => {
                    for arg in &call.args {
                        if let Arg::Resident(name) = arg {
                            if !defined.contains(name) {
                                external.insert(name.clone());
                            }
                        }
                    }
                    if let Some(name) = &call.store_as {
                        defined.insert(name.clone());
                    }
                }
            }
        }
        external
    }

    /// One line: name, steps, calls, kernels and sizes.
    pub fn describe(&self) -> String {
        let kernels: Vec<String> = self.kernels_used().into_iter().collect();
        format!(
            "workload {:?}: {} steps, {} calls ({}), {} of inputs, {} of expected outputs",
            self.name,
            self.steps.len(),
            self.call_count(),
            kernels.join(", "),
            bytes::human(self.input_bytes()),
            bytes::human(self.expected_bytes()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_state::Scalar;

    #[test]
    fn helpers_count_inputs_calls_and_kernels() {
        let mut w = Workload::new("t");
        w.load("g", Tensor::from_f32(&[2, 2], vec![0.0; 4]));
        w.call(
            Call::new("saxpy")
                .arg(Tensor::from_f32(&[3], vec![0.0; 3]))
                .arg(Tensor::from_f32(&[3], vec![0.0; 3]))
                .param("a", Scalar::F64(1.0)),
            Some(Tensor::from_f32(&[3], vec![0.0; 3])),
        );
        w.call(Call::new("stencil2d").resident("g").store_as("g"), None);
        assert_eq!(w.input_bytes(), 16 + 24);
        assert_eq!(w.expected_bytes(), 12);
        assert_eq!(w.call_count(), 2);
        assert_eq!(
            w.kernels_used().into_iter().collect::<Vec<_>>(),
            ["saxpy", "stencil2d"]
        );
        assert!(w.describe().contains("3 steps, 2 calls (saxpy, stencil2d)"));
        assert!(w.external_residents().is_empty());
        w.call(Call::new("softmax").resident("later"), None);
        w.load("later", Tensor::from_f32(&[1, 1], vec![0.0]));
        w.call(Call::new("softmax").resident("later"), None);
        assert_eq!(
            w.external_residents().into_iter().collect::<Vec<_>>(),
            ["later"]
        );
    }
}
