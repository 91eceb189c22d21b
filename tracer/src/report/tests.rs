//! Report building on real Go binaries: events carry real code addresses of
//! the probe program, and the report must name its real functions.

use std::collections::HashMap;
use std::time::Duration;

use tracer_common::{EventHeader, GoCreateEvent, GoIdentity, GoParkEvent};

use super::groups::{GroupInput, build};
use crate::decode::Event;
use crate::gobin::GoBinary;
use crate::gobin::testutil::probe;
use crate::gobin::wrappers::go_wrapper_callee;
use crate::model::GoroutineModel;
use crate::resolve::StackResolver;

#[test]
fn blocked_goroutines_grouped_with_real_names() {
    for minor in ["1.21", "1.26"] {
        let bin = GoBinary::open(&probe(minor)).unwrap();
        let layout = bin.layout().unwrap();
        let symbolizer = bin.symbolizer().unwrap();
        let addr = |name: &str| {
            bin.symbols()
                .lookup(name)
                .unwrap_or_else(|| panic!("{name}"))
                .addr
        };
        // The wrapper `go receiveForever(ch, done)` compiles to.
        let wrapper = bin
            .symbols()
            .iter()
            .filter(|f| f.name.starts_with("main.main."))
            .find(|f| {
                go_wrapper_callee(&bin, &symbolizer, f.addr).as_deref()
                    == Some("main.receiveForever")
            })
            .expect("wrapper")
            .addr;
        let chan_receive = *layout
            .wait_reasons
            .iter()
            .find(|(_, n)| *n == "waitReasonChanReceive")
            .unwrap()
            .0;
        let g = |goid| GoIdentity {
            goid,
            parent_goid: 1,
            gopc: addr("main.main") + 0x40,
            startpc: wrapper,
        };
        let mut model = GoroutineModel::new();
        for goid in [20, 21, 22] {
            let hdr = EventHeader {
                ts_ns: 1_000_000_000,
                ..Default::default()
            };
            model.apply(&Event::Create(GoCreateEvent {
                header: hdr,
                g: g(goid),
                stack_id: 1,
                caller_pc: addr("main.main") + 0x40,
                ..Default::default()
            }));
            model.apply(&Event::Park(GoParkEvent {
                header: EventHeader {
                    ts_ns: 2_000_000_000,
                    ..hdr
                },
                g: g(goid),
                stack_id: 2,
                reason: chan_receive as u32,
                caller_pc: addr("runtime.chanrecv") + 0x20,
                chans: [0; 4],
            }));
        }
        let raw = HashMap::from([
            (
                1,
                vec![addr("runtime.newproc"), addr("runtime.main") + 0x30],
            ),
            (
                2,
                vec![
                    addr("runtime.gopark"),
                    addr("runtime.chanrecv1") + 0x10,
                    addr("main.receiveForever") + 0x20,
                    wrapper + 0x10,
                ],
            ),
        ]);
        let mut resolver = StackResolver::new(&bin, &symbolizer, raw, 0);
        let report = build(GroupInput {
            model: &model,
            resolver: &mut resolver,
            wait_reasons: &layout.wait_reasons,
            start_ns: 0,
            end_ns: 10_000_000_000,
            state_ns: 10_000_000_000,
            leak_threshold: Duration::from_secs(5),
            proven: None,
        });
        assert_eq!(report.suspect_count, 3, "Go {minor}");
        let grp = &report.suspects[0];
        assert_eq!(grp.start_function, "main.receiveForever", "Go {minor}");
        assert_eq!(grp.wait_reason.as_deref(), Some("chan receive"));
        assert_eq!(grp.leak_pattern, Some(1));
        assert_eq!(grp.parent_goids, [1]);
        assert_eq!(grp.created_at.as_ref().unwrap().function, "main.main");
        assert_eq!(
            grp.blocked_at.as_ref().unwrap().function,
            "main.receiveForever"
        );
        let names: Vec<&str> = grp
            .blocked_stack
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        // The entry return address fills the frame the FP walk misses; the
        // go-statement wrapper is hidden.
        assert_eq!(
            names,
            [
                "runtime.gopark",
                "runtime.chanrecv",
                "runtime.chanrecv1",
                "main.receiveForever"
            ],
            "Go {minor}"
        );
        assert_eq!(grp.blocked_for_s.as_ref().unwrap().max, 8.0);
        assert_eq!(grp.age_s.as_ref().unwrap().max, 9.0);
        assert!(
            grp.blocked_stack
                .iter()
                .all(|f| f.line > 0 && f.file.is_some())
        );
        assert_eq!(report.verdict, "3 leak suspects in 1 group");
    }
}
