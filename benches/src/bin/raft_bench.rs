//! raft_bench: raftlog throughput in one thread, no I/O.
//!
//! 1. `propose`: a 3-node cluster over `MemStorage`, messages delivered in-process; the leader
//!    takes a batch of 256-byte proposals, then every node's Readies are handled until the batch
//!    is committed and applied on the leader. Reports proposals committed per second.
//! 2. `step`: `MsgAppend` stepped into a follower (one entry each) and `MsgAppendResponse`
//!    stepped into a leader, per second, Readies handled as they come.
//!
//! Run: `cargo run --release -p benches --bin raft_bench [-- [all|propose|step] [proposals_total] [batch_size]]`.

use std::collections::VecDeque;
use std::time::Instant;

use raftlog::{ConfState, Config, Entry, MemStorage, Message, MessageType, RawNode, StateRole};

const PAYLOAD_BYTES: usize = 256;

fn config(id: u64) -> Config {
    let mut c = Config::new(id);
    c.election_tick = 10;
    c.heartbeat_tick = 2;
    c.max_inflight_msgs = 4096;
    c.max_size_per_msg = 4 << 20;
    c.max_inflight_bytes = 1 << 30;
    c.max_uncommitted_size = 1 << 30;
    c.max_committed_size_per_ready = 1 << 30;
    c.batch_append = true;
    c.pre_vote = false;
    c.check_quorum = false;
    c.rng_seed = id;
    c
}

struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    queue: VecDeque<Message>,
    applied_on_leader: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let cs = ConfState::from_voters(vec![1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| {
                RawNode::new(&config(id), MemStorage::new_with_conf_state(cs.clone()))
                    .expect("valid config")
            })
            .collect();
        let mut c = Cluster {
            nodes,
            queue: VecDeque::new(),
            applied_on_leader: 0,
        };
        c.nodes[0].campaign().expect("campaign");
        c.run_until_quiet();
        assert_eq!(c.nodes[0].raft.state, StateRole::Leader);
        c
    }

    /// Handles one Ready of node `i` the synchronous way (persist, send, apply, advance).
    fn handle_ready(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        if !node.has_ready() {
            return false;
        }
        let mut rd = node.ready();
        self.queue.extend(rd.take_messages());
        let store = node.store().clone();
        if !rd.entries().is_empty() {
            store.wl().append(rd.entries()).expect("append");
        }
        if let Some(hs) = rd.hs() {
            store.wl().set_hard_state(*hs);
        }
        self.queue.extend(rd.take_persisted_messages());
        let mut applied = rd.committed_entries().len() as u64;
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().commit = commit;
        }
        self.queue.extend(light.take_messages());
        applied += light.take_committed_entries().len() as u64;
        node.advance_apply();
        if i == 0 {
            self.applied_on_leader += applied;
        }
        true
    }

    /// Discards applied entries from every storage, as an application that snapshots would.
    fn compact(&mut self) {
        for node in &self.nodes {
            let applied = node.raft.raft_log.applied;
            node.store().wl().compact(applied).expect("compact");
        }
    }

    fn run_until_quiet(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while self.handle_ready(i) {
                    moved = true;
                }
            }
            if self.queue.is_empty() && !moved {
                return;
            }
            while let Some(m) = self.queue.pop_front() {
                let to = m.to as usize - 1;
                let _ = self.nodes[to].step(m);
            }
        }
    }
}

fn bench_propose(total: u64, batch: u64) -> f64 {
    let mut c = Cluster::new();
    let payload = vec![0x5Au8; PAYLOAD_BYTES];
    let base = c.applied_on_leader;
    let started = Instant::now();
    let mut proposed = 0;
    while proposed < total {
        for _ in 0..batch.min(total - proposed) {
            c.nodes[0]
                .propose(vec![], payload.clone())
                .expect("propose");
            proposed += 1;
        }
        c.run_until_quiet();
        c.compact();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        c.applied_on_leader - base,
        total,
        "not every proposal was committed and applied"
    );
    total as f64 / secs
}

fn follower() -> RawNode<MemStorage> {
    let cs = ConfState::from_voters(vec![1, 2, 3]);
    RawNode::new(&config(2), MemStorage::new_with_conf_state(cs)).expect("valid config")
}

/// Persists and advances every pending Ready of `node`, discarding its messages.
fn drain(node: &mut RawNode<MemStorage>) {
    while node.has_ready() {
        let mut rd = node.ready();
        let store = node.store().clone();
        store.wl().append(rd.entries()).expect("append");
        if let Some(hs) = rd.hs() {
            store.wl().set_hard_state(*hs);
        }
        drop(rd.take_messages());
        drop(rd.take_persisted_messages());
        let mut light = node.advance(rd);
        drop(light.take_messages());
        node.advance_apply();
    }
}

fn bench_step_append(count: u64) -> f64 {
    let mut f = follower();
    let payload = bytes::Bytes::from(vec![1u8; PAYLOAD_BYTES]);
    let msgs: Vec<Message> = (0..count)
        .map(|i| Message {
            msg_type: MessageType::MsgAppend,
            from: 1,
            to: 2,
            term: 1,
            index: i,
            log_term: if i == 0 { 0 } else { 1 },
            commit: i,
            entries: vec![Entry::new(1, i + 1, payload.clone())],
            ..Default::default()
        })
        .collect();
    let started = Instant::now();
    for (n, m) in msgs.into_iter().enumerate() {
        f.step(m).expect("step");
        if n % 256 == 255 {
            drain(&mut f);
        }
    }
    drain(&mut f);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(f.raft.raft_log.last_index(), count);
    count as f64 / secs
}

fn bench_step_append_response(count: u64) -> f64 {
    let cs = ConfState::from_voters(vec![1, 2, 3]);
    let mut l =
        RawNode::new(&config(1), MemStorage::new_with_conf_state(cs)).expect("valid config");
    l.campaign().expect("campaign");
    let term = l.raft.term;
    // Become leader with votes from 2, then fill the log.
    let vote = Message {
        msg_type: MessageType::MsgRequestVoteResponse,
        from: 2,
        to: 1,
        term,
        ..Default::default()
    };
    l.step(vote).expect("vote");
    assert_eq!(l.raft.state, StateRole::Leader);
    drain(&mut l);
    let payload = vec![1u8; PAYLOAD_BYTES];
    for _ in 0..count {
        l.propose(vec![], payload.clone()).expect("propose");
    }
    drain(&mut l);
    let first = l.raft.raft_log.committed + 1;
    let started = Instant::now();
    for (n, idx) in (first..first + count).enumerate() {
        let m = Message {
            msg_type: MessageType::MsgAppendResponse,
            from: 2,
            to: 1,
            term,
            index: idx,
            ..Default::default()
        };
        l.step(m).expect("step");
        if n % 256 == 255 {
            drain(&mut l);
        }
    }
    drain(&mut l);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        l.raft.raft_log.committed,
        first + count - 1,
        "acks did not commit"
    );
    count as f64 / secs
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if args.first().is_some_and(|a| a.parse::<u64>().is_err()) {
        args.remove(0)
    } else {
        "all".to_string()
    };
    let nums: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let total = nums.first().copied().unwrap_or(2_000_000);
    let batch = nums.get(1).copied().unwrap_or(4096);
    let step_count = 1_000_000;
    println!("raft_bench: 3 nodes, one thread, MemStorage, {PAYLOAD_BYTES} B payloads");
    let mut json = Vec::new();
    if mode == "all" || mode == "propose" {
        bench_propose(total / 10, batch); // warm-up
        let propose = bench_propose(total, batch);
        println!("  proposals committed:            {propose:>12.0} /s  ({total} proposals, batch {batch})");
        json.push(format!(
            "\"proposals_committed_per_s\": {propose:.0}, \"batch\": {batch}"
        ));
    }
    if mode == "all" || mode == "step" {
        let append = bench_step_append(step_count);
        let append_resp = bench_step_append_response(step_count);
        println!("  follower step(MsgAppend):       {append:>12.0} /s  (1 entry each)");
        println!("  leader step(MsgAppendResponse): {append_resp:>12.0} /s");
        json.push(format!(
            "\"step_append_per_s\": {append:.0}, \"step_append_response_per_s\": {append_resp:.0}"
        ));
    }
    println!(
        "{{{}, \"payload_bytes\": {PAYLOAD_BYTES}}}",
        json.join(", ")
    );
}
