//! How long anything a worker runs may take before it counts as hung.
//!
//! A kernel call: the larger of 10 s and 50 times the previous good
//! version's median for that call (10 s when there is none), or exactly
//! `--call-timeout`. Anything else (starting an engine, a swap, a
//! checkpoint, replay bookkeeping between calls) gets a minute: it moves
//! state, which takes time proportional to its size.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::worker::status::Running;

/// The floor of a call's deadline, and the deadline of a call never timed.
pub const CALL_FLOOR: Duration = Duration::from_secs(10);
/// A call may take this many times the previous version's median.
pub const MEDIAN_FACTOR: f64 = 50.0;
/// Deadline of everything that is not a kernel call.
pub const OP_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default)]
pub struct Deadlines {
    /// `--call-timeout`: every call gets exactly this.
    pub fixed: Option<Duration>,
    /// The previous good version's median per call key (`3:matmul`), s.
    pub previous: BTreeMap<String, f64>,
}

impl Deadlines {
    /// The deadline of a call (`index`, `kernel`).
    pub fn call(&self, index: usize, kernel: &str) -> Duration {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        match self.previous.get(&format!("{index}:{kernel}")) {
            Some(median) if median.is_finite() && *median > 0.0 => {
                CALL_FLOOR.max(Duration::from_secs_f64(median * MEDIAN_FACTOR))
            }
            _ => CALL_FLOOR,
        }
    }

    /// The deadline of whatever `running` is.
    pub fn of(&self, running: &Running) -> Duration {
        match &running.call {
            Some((index, kernel)) => self.call(*index, kernel),
            None => OP_DEADLINE.max(self.fixed.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_gets_fifty_medians_but_never_less_than_ten_seconds() {
        let mut d = Deadlines::default();
        assert_eq!(d.call(0, "saxpy"), CALL_FLOOR, "first version");
        d.previous.insert("0:saxpy".into(), 0.001);
        d.previous.insert("1:matmul".into(), 0.5);
        assert_eq!(d.call(0, "saxpy"), CALL_FLOOR);
        assert_eq!(d.call(1, "matmul"), Duration::from_secs(25));
        assert_eq!(
            d.call(2, "matmul"),
            CALL_FLOOR,
            "another call's median does not count"
        );
        d.fixed = Some(Duration::from_millis(1500));
        assert_eq!(d.call(1, "matmul"), Duration::from_millis(1500));
        let op = Running {
            op: "swap".into(),
            ..Running::default()
        };
        assert_eq!(d.of(&op), OP_DEADLINE);
    }
}
