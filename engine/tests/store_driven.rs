//! A store opened for a runtime (`Store::open_driven`) and turned by hand, as
//! `NodeTransport::drive_store` turns it, when its caller cannot watch the log device's
//! completion eventfd: the loop must then ask to be turned again within `UNWATCHED_LOG_POLL`
//! while a log write is in flight (instead of at its next tick), and its writes must commit.

mod store_harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use engine::state::worker::BuiltSnapshot;
use engine::state::{Command, Op};
use engine::store::{
    ClientRequest, ClientResponse, RaftMessage, Store, StoreDriver, Transport, Turn,
    UNWATCHED_LOG_POLL,
};
use store_harness::{format_file, initial_regions, options};

/// A single-voter region sends nothing.
struct Nowhere;

impl Transport for Nowhere {
    fn send(&self, _to_store: u64, _msgs: Vec<RaftMessage>) {}
    fn send_snapshot(&self, _to_store: u64, _message: RaftMessage, _snapshot: Arc<BuiltSnapshot>) {}
}

/// What the hand-driven loop saw.
#[derive(Default)]
struct Seen {
    /// Turns that ended with a log write in flight.
    in_flight_turns: u64,
    /// The longest wait such a turn asked for.
    in_flight_wait_max: Duration,
}

/// Turns `driver` on this thread until it finishes: runs the turn, starts its log writes,
/// then sleeps until its wake fires or the wait it asked for passes. Nobody watches the log's
/// completion eventfd.
fn turn_by_hand(mut driver: StoreDriver, seen: &Mutex<Seen>) {
    let me = std::thread::current();
    driver.wake().set(Box::new(move || me.unpark()));
    while let Turn::Wait(wait) = driver.turn() {
        if driver.has_log_writes_to_start() {
            driver.start_log_writes();
        }
        if driver.has_log_writes_in_flight() {
            let mut s = seen.lock().unwrap();
            s.in_flight_turns += 1;
            s.in_flight_wait_max = s.in_flight_wait_max.max(wait);
        }
        std::thread::park_timeout(wait);
    }
    driver.finish();
}

#[test]
fn unwatched_log_completions_are_polled_while_writes_are_in_flight() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().join("store1.img");
    format_file(&path, 1);
    let initial = initial_regions(&[1], 1);
    let mut opts = options(&path);
    // Long ticks: a completion seen only at a tick would take this long.
    opts.store.tick_interval = Duration::from_millis(50);
    opts.store.election_ticks = 3;
    opts.store.heartbeat_ticks = 1;
    let (store, mut driver) = Store::open_driven(opts, Arc::new(Nowhere), &initial).expect("open");
    let Some(fd) = driver.take_log_completion_fd() else {
        println!("skipped: the log has no completion eventfd here (io_uring refused?), so a writer thread drives it");
        drop(driver);
        let _ = store.stop();
        return;
    };
    // The caller cannot watch it.
    drop(fd);
    driver.log_completions_unwatched();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = Arc::clone(&seen);
    let loop_thread = std::thread::spawn(move || turn_by_hand(driver, &seen2));

    let router = store.router();
    let call = |req: ClientRequest| {
        let (tx, rx) = crossbeam_channel::bounded(1);
        router.submit(
            req,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv_timeout(Duration::from_secs(20)).expect("an answer")
    };
    // The single voter elects itself within a few ticks.
    let region = loop {
        match call(ClientRequest::Regions) {
            Ok(ClientResponse::Regions(rs)) if rs.iter().any(|r| r.is_leader) => {
                break rs.into_iter().find(|r| r.is_leader).expect("a leader");
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let puts = 40u64;
    for i in 1..=puts {
        let r = call(ClientRequest::Write {
            region_id: region.meta.region_id,
            epoch: region.meta.epoch,
            command: Command {
                client_id: 1,
                sequence: i,
                ops: vec![Op::Put {
                    key: Bytes::from(format!("key-{i:03}")),
                    value: Bytes::from(vec![i as u8; 256]),
                }],
            },
        });
        assert!(r.is_ok(), "put {i}: {r:?}");
    }
    for i in [1, puts / 2, puts] {
        let got = call(ClientRequest::Get {
            region_id: region.meta.region_id,
            epoch: region.meta.epoch,
            key: Bytes::from(format!("key-{i:03}")),
        });
        match got {
            Ok(ClientResponse::Value(Some(v))) => assert_eq!(v, Bytes::from(vec![i as u8; 256])),
            other => panic!("get key-{i:03}: {other:?}"),
        }
    }

    let s = seen.lock().unwrap();
    assert!(
        s.in_flight_turns >= puts,
        "only {} turns ended with a write in flight for {puts} puts",
        s.in_flight_turns
    );
    assert!(
        s.in_flight_wait_max <= UNWATCHED_LOG_POLL,
        "a turn with a log write in flight asked to wait {:?} (more than {:?}): its completion would be seen late",
        s.in_flight_wait_max,
        UNWATCHED_LOG_POLL
    );
    drop(s);
    store.stop().expect("stop");
    loop_thread.join().expect("loop thread");
}
