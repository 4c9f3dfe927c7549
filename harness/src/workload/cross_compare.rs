//! Cross-comparison of two backends' outputs (`kiln dev --backends
//! cpu,vulkan`): after every swap the workload replays on each served
//! backend, one of them writes what each call produced
//! ([`outputs_workload`], a workload file whose expected values are its
//! outputs) and each other backend compares its own outputs of the same
//! replay with that file ([`cross_compare`]), call by call.
//!
//! Each backend is also checked against the reference as usual; this is
//! the check of the backends with each other. Two outputs that are each
//! within the declared tolerance of the reference can be twice as far
//! from each other, so the tolerance here is the call's declared one
//! doubled (absolute, relative and ulps).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared_state::{DType, KernelSet};

use crate::workload::compare::{Tolerance, Tolerances, compare};
use crate::workload::replay::{ReplayReport, bind_dims};
use crate::workload::{Step, Workload};

/// How one call's outputs on two backends compare.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CallAgreement {
    pub index: usize,
    pub kernel: String,
    /// `None`: not compared (one side has no output: skipped, an error).
    pub agree: Option<bool>,
    pub max_abs: Option<f64>,
    /// The comparison's line, or why the call was not compared.
    pub summary: String,
}

/// One backend's outputs against another's, for every call.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CrossCheck {
    /// The label of the backend whose outputs were compared (`kernel-vulkan-v1`).
    pub label: String,
    /// The label of the backend they were compared with (`kernel-cpu-v2`).
    pub against: String,
    pub calls: Vec<CallAgreement>,
}

impl CrossCheck {
    /// Calls whose outputs were compared.
    pub fn compared(&self) -> usize {
        self.calls.iter().filter(|c| c.agree.is_some()).count()
    }

    /// Calls whose outputs agree within tolerance.
    pub fn agreed(&self) -> usize {
        self.calls.iter().filter(|c| c.agree == Some(true)).count()
    }

    /// Every compared call agrees (and at least one was compared).
    pub fn all_agree(&self) -> bool {
        self.compared() > 0 && self.agreed() == self.compared()
    }

    /// The first call whose outputs disagree.
    pub fn first_disagreement(&self) -> Option<&CallAgreement> {
        self.calls.iter().find(|c| c.agree == Some(false))
    }

    /// The agreement of call `index`, if compared.
    pub fn agreement_of(&self, index: usize) -> Option<&CallAgreement> {
        self.calls.iter().find(|c| c.index == index)
    }

    /// One line: `kernel-vulkan-v1 agrees with kernel-cpu-v2 on 5 of 5 calls`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{} {} with {} on {} of {} compared call(s)",
            self.label,
            if self.all_agree() {
                "agrees"
            } else {
                "DISAGREES"
            },
            self.against,
            self.agreed(),
            self.compared()
        );
        if let Some(c) = self.first_disagreement() {
            line.push_str(&format!(
                "; first at call {} ({}): {}",
                c.index, c.kernel, c.summary
            ));
        }
        let not = self.calls.len() - self.compared();
        if not > 0 {
            line.push_str(&format!("; {not} call(s) not compared"));
        }
        line
    }
}

/// The calls of `workload` as `report` (a replay of it, made with
/// `keep_outputs`) ran them, with what each produced as its expected value
/// (none where the call produced nothing: skipped, an error). One call
/// step per call, in order, so call `i` of the file is call `i` of the
/// replay.
pub fn outputs_workload(name: &str, workload: &Workload, report: &ReplayReport) -> Workload {
    let mut out = Workload::new(name);
    for (step, result) in workload.call_steps().zip(&report.calls) {
        match &result.recorded {
            Some((call, output)) => out.call(call.clone(), Some(output.clone())),
            None => out.call(step.call.clone(), None),
        };
    }
    out
}

/// The tolerance between two backends: the call's declared one, doubled.
fn between_backends(t: Tolerance) -> Tolerance {
    Tolerance {
        abs: t.abs * 2.0,
        rel: t.rel * 2.0,
        ulps: t.ulps.saturating_mul(2),
        scale: t.scale,
    }
}

/// Compares the outputs of `ours` (a replay made with `keep_outputs`,
/// labelled `ours.label`) with `theirs` (another backend's
/// [`outputs_workload`], labelled `against`), call by call. `shapes`: the
/// dtype and shape of the residents the calls read (to bind their dims for
/// the tolerance's reduction length).
pub fn cross_compare(
    ours: &ReplayReport,
    theirs: &Workload,
    against: &str,
    declared: &KernelSet,
    tolerances: &Tolerances,
    shapes: &BTreeMap<String, (DType, Vec<usize>)>,
) -> CrossCheck {
    let their_steps: Vec<_> = theirs.call_steps().collect();
    let mut calls = Vec::new();
    for result in &ours.calls {
        let not = |why: &str| CallAgreement {
            index: result.index,
            kernel: result.kernel.clone(),
            agree: None,
            max_abs: None,
            summary: why.to_string(),
        };
        let Some(theirs) = their_steps.get(result.index) else {
            calls.push(not(&format!("{against} has no call {}", result.index)));
            continue;
        };
        if theirs.call.kernel != result.kernel {
            calls.push(not(&format!(
                "{against}'s call {} is {}, not {}",
                result.index, theirs.call.kernel, result.kernel
            )));
            continue;
        }
        let (Some((call, got)), Some(want)) = (&result.recorded, theirs.expected.first()) else {
            calls.push(not(if result.recorded.is_none() {
                "no output here (skipped or failed to run)"
            } else {
                "no output on the other backend (skipped or failed to run)"
            }));
            continue;
        };
        let decl = declared.get(&call.kernel);
        let dims = decl
            .and_then(|d| bind_dims(d, call, shapes))
            .unwrap_or_default();
        let tolerance =
            between_backends(tolerances.for_call(&call.kernel, decl, &dims, want.dtype()));
        let comparison = compare(want, got, &tolerance);
        calls.push(CallAgreement {
            index: result.index,
            kernel: result.kernel.clone(),
            agree: Some(comparison.passed()),
            max_abs: Some(comparison.max_abs),
            summary: comparison.summary(),
        });
    }
    CrossCheck {
        label: ours.label.clone(),
        against: against.to_string(),
        calls,
    }
}

/// The steps of `workload` that load residents, as shapes (for
/// [`cross_compare`]).
pub fn load_shapes(workload: &Workload) -> BTreeMap<String, (DType, Vec<usize>)> {
    workload
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Load { name, tensor } => {
                Some((name.clone(), (tensor.dtype(), tensor.shape().to_vec())))
            }
            Step::Call(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use shared_state::{Call, Tensor};

    use super::*;
    use crate::workload::reference::ExpectedFrom;
    use crate::workload::replay::CallResult;

    fn result(index: usize, output: Option<Vec<f32>>) -> CallResult {
        CallResult {
            index,
            key: format!("{index}:saxpy"),
            kernel: "saxpy".into(),
            description: String::new(),
            comparison: None,
            stats: None,
            verdict: None,
            previous_median: None,
            ratio: None,
            error: output.is_none().then(|| "trial 0: boom".to_string()),
            recorded: output.map(|o| (Call::new("saxpy"), Tensor::from_f32(&[o.len()], o))),
            expected_from: ExpectedFrom::Unchecked,
            trials: (1, 1),
            skipped: None,
            work: None,
            point: None,
        }
    }

    #[test]
    fn outputs_agree_within_twice_the_tolerance_and_missing_ones_are_not_compared() {
        let tolerances = Tolerances::default();
        let abs = tolerances.get("saxpy", None, DType::F32).abs;
        assert!(abs > 0.0, "float outputs have an absolute tolerance");
        // What the first backend produced: zeros, four calls.
        let first = ReplayReport {
            label: "kernel-cpu-v2".into(),
            calls: (0..4).map(|i| result(i, Some(vec![0.0; 8]))).collect(),
            ms: 0.0,
            timing_header: None,
            other_work_share: None,
            roof: None,
        };
        let workload = Workload {
            name: "w".into(),
            steps: (0..4)
                .map(|_| Step::Call(crate::workload::CallStep::new(Call::new("saxpy"), vec![])))
                .collect(),
        };
        let theirs = outputs_workload("kernel-cpu-v2-outputs", &workload, &first);
        assert_eq!(theirs.call_count(), 4);
        // The second backend: equal; 1.5x the tolerance off (within the
        // doubled one); 10x off; no output.
        let ours = ReplayReport {
            label: "kernel-vulkan-v1".into(),
            calls: vec![
                result(0, Some(vec![0.0; 8])),
                result(1, Some(vec![(1.5 * abs) as f32; 8])),
                result(2, Some(vec![(10.0 * abs) as f32; 8])),
                result(3, None),
            ],
            ms: 0.0,
            timing_header: None,
            other_work_share: None,
            roof: None,
        };
        let check = cross_compare(
            &ours,
            &theirs,
            "kernel-cpu-v2",
            &KernelSet::default(),
            &tolerances,
            &BTreeMap::new(),
        );
        let agree: Vec<Option<bool>> = check.calls.iter().map(|c| c.agree).collect();
        assert_eq!(agree, [Some(true), Some(true), Some(false), None]);
        assert!(!check.all_agree());
        assert_eq!((check.compared(), check.agreed()), (3, 2));
        let line = check.describe();
        assert!(
            line.starts_with("kernel-vulkan-v1 DISAGREES with kernel-cpu-v2 on 2 of 3")
                && line.contains("first at call 2 (saxpy)")
                && line.ends_with("1 call(s) not compared"),
            "{line}"
        );
    }
}
