//! What the engine logs: the chosen device when it starts, and on drop how
//! many device allocations were still live (only the residents).

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use shared_state::tracing::field::{Field, Visit};
use shared_state::tracing::{self, Event, Metadata, Subscriber, span};
use shared_state::{Call, Engine, Tensor};

use kernel_reference::test_values;

use kernel_conformance::support::{assert_child, engine, run_child, test_path};

use super::Vulkan;

/// Records every event as `field=value` text.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// In a child process: `tracing` caches per call site whether anyone
/// listens, and other tests running at the same time without a subscriber
/// would race with this one's scoped subscriber.
#[test]
fn logs_the_device_and_only_residents_live_at_drop() {
    let stdout = run_child(&test_path(module_path!(), CHILD), &[]);
    assert!(
        stdout.contains("checked logs") || stdout.contains("skipped: "),
        "{stdout}"
    );
}

const CHILD: &str = "child_logs_the_device_and_live_allocations";

#[test]
#[ignore = "run by logs_the_device_and_only_residents_live_at_drop in a child process"]
fn child_logs_the_device_and_live_allocations() {
    assert_child("logs_the_device_and_only_residents_live_at_drop");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let ran = tracing::subscriber::with_default(Capture(lines.clone()), || {
        let Some(mut e) = engine::<Vulkan>(CHILD) else {
            return false;
        };
        e.put_resident("a", Tensor::from_f32(&[100], test_values(100, 1)))
            .unwrap();
        e.put_resident("b", Tensor::from_f32(&[100], test_values(100, 2)))
            .unwrap();
        e.run(Call::new("dot").resident("a").resident("b")).unwrap();
        e.run(Call::new("saxpy").resident("a").resident("b").store_as("a"))
            .unwrap();
        e.run(Call::new("softmax").arg(Tensor::from_f32(&[3, 3], test_values(9, 3))))
            .unwrap();
        let device = e.info().unwrap().device;
        drop(e);
        let lines = lines.lock().unwrap();
        let created = lines
            .iter()
            .find(|l| l.contains("vulkan engine created"))
            .expect("creation logged");
        let name = device.split(" [").next().unwrap();
        assert!(
            created.contains(name) && created.contains("driver="),
            "{created}"
        );
        let dropped = lines
            .iter()
            .find(|l| l.contains("engine dropped"))
            .expect("drop logged");
        assert!(dropped.contains("2 device allocations"), "{dropped}");
        assert!(!lines.iter().any(|l| l.contains("leaked")), "{lines:?}");
        true
    });
    if ran {
        println!("checked logs: {:?}", lines.lock().unwrap());
    }
}
