//! Applying on the caller's thread ([`InlineApply`]): a task of puts and deletes is applied
//! where it is handed over, its responder answered on that very thread, and the worker's own
//! `Applied` event still comes back; a compare-and-swap, a range delete or an oversized task is
//! given back for the worker; while the worker is in the middle of a request, the task is
//! given back too (order is kept); and applies made inline still make the worker checkpoint.
//! All on a sim device, read back through the worker.

mod state_harness;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use engine::state::worker::{
    ApplyConfig, ApplyEvent, ApplyRequest, ApplyResult, ApplyTask, ApplyWorker, InlineApply,
    ReadOutput, ReadRequest, Responder, INLINE_APPLY_ENTRIES_MAX,
};
use engine::state::{Command, Op};
use state_harness::*;

/// How long a test waits for the worker before calling it a hang (not a performance bound).
const HANG_GUARD: Duration = Duration::from_secs(60);
const REGION: u64 = 1;

fn command(ops: Vec<Op>) -> Bytes {
    Command {
        client_id: 0,
        sequence: 0,
        ops,
    }
    .encode()
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
    }
}

fn task(first_index: u64, commands: Vec<Bytes>) -> ApplyTask {
    let entries = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| raftlog::Entry::new(1, first_index + i as u64, c))
        .collect();
    ApplyTask::new(REGION, entries)
}

fn worker(config: ApplyConfig) -> (ApplyWorker, InlineApply) {
    let (sim, sb) = device(7, 48);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(REGION)).unwrap();
    store.checkpoint().unwrap();
    let worker = ApplyWorker::spawn(store, config).unwrap();
    let inline = worker.inline().expect("a running worker");
    (worker, inline)
}

/// Offers `req` until it is applied inline: the worker gives a task back while it is in a
/// background step (it starts with compaction steps), and takes it once it waits again.
fn apply_inline(inline: &mut InlineApply, mut req: ApplyRequest) {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while let Some(back) = inline.apply_here(req) {
        assert!(std::time::Instant::now() < deadline, "never applied inline");
        std::thread::sleep(Duration::from_millis(1));
        req = back;
    }
}

fn get(worker: &ApplyWorker, key: &str) -> Option<Bytes> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    worker
        .send(ApplyRequest::Get {
            region_id: REGION,
            key: Bytes::from(key.to_string()),
            reply: tx,
        })
        .unwrap();
    rx.recv_timeout(HANG_GUARD).unwrap().unwrap()
}

fn applied_index(worker: &ApplyWorker) -> u64 {
    loop {
        match worker.events().recv_timeout(HANG_GUARD).unwrap() {
            ApplyEvent::Applied { applied_index, .. } => return applied_index,
            ApplyEvent::CheckpointDone(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_small_write_task_is_applied_and_answered_on_the_calling_thread() {
    let (worker, mut inline) = worker(ApplyConfig::default());
    let mut t = task(1, vec![command(vec![put("a", "1"), put("b", "2")])]);
    let (answered_tx, answered_rx) = mpsc::channel();
    t.responders.push(Responder::new(
        1,
        Box::new(move |r: Option<&ApplyResult>| {
            let ok = r.is_some_and(|r| r.results.is_ok());
            answered_tx.send((std::thread::current().id(), ok)).unwrap();
        }),
    ));
    apply_inline(&mut inline, ApplyRequest::Apply(t));
    // Answered before `apply_here` returned, on this thread.
    let (thread, ok) = answered_rx.try_recv().expect("answered inline");
    assert_eq!(thread, std::thread::current().id());
    assert!(ok);
    assert_eq!(applied_index(&worker), 1);
    let d = task(2, vec![command(vec![Op::Delete { key: "a".into() }])]);
    apply_inline(&mut inline, ApplyRequest::Apply(d));
    assert_eq!(applied_index(&worker), 2);
    assert_eq!(get(&worker, "a"), None);
    assert_eq!(get(&worker, "b"), Some(Bytes::from("2")));
    worker.stop().unwrap();
}

#[test]
fn reads_of_the_device_unbounded_ops_and_big_tasks_go_to_the_worker() {
    let (worker, mut inline) = worker(ApplyConfig::default());
    let cas = command(vec![Op::Cas {
        key: "a".into(),
        expected: None,
        new: Some("1".into()),
    }]);
    let range = command(vec![Op::DeleteRange {
        start: "a".into(),
        end: "z".into(),
    }]);
    let many = (0..=INLINE_APPLY_ENTRIES_MAX)
        .map(|i| command(vec![put(&format!("k{i}"), "v")]))
        .collect();
    for t in [task(1, vec![cas]), task(1, vec![range]), task(1, many)] {
        let back = inline.apply_here(ApplyRequest::Apply(t));
        assert!(matches!(back, Some(ApplyRequest::Apply(_))), "given back");
    }
    // Nothing was applied: the region is still at its initial index.
    let put_x = task(1, vec![command(vec![put("x", "1")])]);
    apply_inline(&mut inline, ApplyRequest::Apply(put_x));
    assert_eq!(applied_index(&worker), 1);
    worker.stop().unwrap();
}

#[test]
fn a_task_waits_its_turn_while_the_worker_is_in_the_middle_of_a_request() {
    let (worker, mut inline) = worker(ApplyConfig::default());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    // A read whose answer blocks the worker (holding its state) until the gate opens.
    worker
        .send(ApplyRequest::Read {
            region_id: REGION,
            request: ReadRequest::Get { key: "a".into() },
            reply: Box::new(move |r| {
                assert!(matches!(r, Ok(ReadOutput::Value(None))));
                entered_tx.send(()).unwrap();
                gate_rx.recv_timeout(HANG_GUARD).unwrap();
            }),
        })
        .unwrap();
    entered_rx.recv_timeout(HANG_GUARD).unwrap();
    let t = task(1, vec![command(vec![put("a", "1")])]);
    let back = inline
        .apply_here(ApplyRequest::Apply(t))
        .expect("given back while the worker is busy");
    gate_tx.send(()).unwrap();
    worker.send(back).unwrap();
    assert_eq!(applied_index(&worker), 1);
    assert_eq!(get(&worker, "a"), Some(Bytes::from("1")));
    worker.stop().unwrap();
}

#[test]
fn applies_made_inline_still_start_checkpoints() {
    let config = ApplyConfig {
        checkpoint_log_bytes: 16 * 1024,
        checkpoint_log_bytes_max: 16 * 1024,
        checkpoint_step_bytes: 8 * 1024,
        ..ApplyConfig::default()
    };
    let (worker, mut inline) = worker(config);
    let value = "v".repeat(1000);
    let deadline = std::time::Instant::now() + HANG_GUARD;
    // Every task is applied inline (one given back while the worker is in a compaction or
    // checkpoint step, or has a request queued, is offered again).
    for i in 1..=40u64 {
        let t = task(i, vec![command(vec![put(&format!("k{i}"), &value)])]);
        apply_inline(&mut inline, ApplyRequest::Apply(t));
    }
    let checkpointed = loop {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        match worker.events().recv_timeout(HANG_GUARD).unwrap() {
            ApplyEvent::CheckpointDone(info) => break info,
            ApplyEvent::Applied { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(checkpointed
        .regions
        .iter()
        .any(|&(r, index)| r == REGION && index > 1));
    worker.stop().unwrap();
}
