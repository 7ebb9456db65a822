//! Smoke test of the core through `RawNode` only: a 3-node in-memory cluster elects a leader,
//! commits proposals (also ones forwarded by followers), answers a ReadIndex, and changes its
//! membership. Messages are delivered in order without loss by a tiny loop in this file; the
//! adversarial schedules live in `simulation.rs`.

use std::collections::BTreeMap;

use raftlog::{
    ConfChange, ConfChangeType, ConfChangeV2, Config, Entry, EntryType, MemStorage, Message,
    RawNode, StateRole,
};

struct Node {
    raw: RawNode<MemStorage>,
    store: MemStorage,
    applied: Vec<Vec<u8>>,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    inflight: Vec<Message>,
}

fn config(id: u64) -> Config {
    Config {
        rng_seed: 7,
        ..Config::new(id)
    }
}

impl Cluster {
    fn new(voters: &[u64]) -> Cluster {
        Cluster::with_config(voters, config)
    }

    /// Proposes `data` on node `id` (which must accept it).
    fn propose(&mut self, id: u64, data: &[u8]) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.raw.propose(vec![], data.to_vec()).unwrap();
    }

    fn with_config(voters: &[u64], config: impl Fn(u64) -> Config) -> Cluster {
        let mut nodes = BTreeMap::new();
        for &id in voters {
            let store =
                MemStorage::new_with_conf_state(raftlog::ConfState::from_voters(voters.to_vec()));
            let raw = RawNode::new(&config(id), store.clone()).unwrap();
            nodes.insert(
                id,
                Node {
                    raw,
                    store,
                    applied: Vec::new(),
                },
            );
        }
        Cluster {
            nodes,
            inflight: Vec::new(),
        }
    }

    fn apply(node: &mut Node, ents: Vec<Entry>) {
        for e in ents {
            match e.entry_type {
                EntryType::EntryNormal if !e.data.is_empty() => node.applied.push(e.data.to_vec()),
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    let cc = ConfChange::decode(&e.data).unwrap();
                    let cs = node.raw.apply_conf_change_v1(&cc).unwrap();
                    node.store.set_conf_state(cs);
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::decode(&e.data).unwrap();
                    let cs = node.raw.apply_conf_change(&cc).unwrap();
                    node.store.set_conf_state(cs);
                }
            }
        }
    }

    /// Handles every node's Ready (steps 1–7 of the crate docs) and queues their messages.
    fn process_readies(&mut self) {
        for node in self.nodes.values_mut() {
            while node.raw.has_ready() {
                let mut rd = node.raw.ready();
                if let Some(hs) = rd.hs() {
                    node.store.set_hard_state(*hs);
                }
                self.inflight.extend(rd.take_messages());
                if !rd.snapshot().is_empty() {
                    node.store.apply_snapshot(rd.snapshot().clone()).unwrap();
                }
                node.store.append(rd.entries()).unwrap();
                self.inflight.extend(rd.take_persisted_messages());
                Self::apply(node, rd.take_committed_entries());
                let mut light = node.raw.advance(rd);
                if let Some(commit) = light.commit_index() {
                    node.store.wl().mut_hard_state().commit = commit;
                }
                self.inflight.extend(light.take_messages());
                Self::apply(node, light.take_committed_entries());
                node.raw.advance_apply();
            }
        }
    }

    /// Delivers messages until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            self.process_readies();
            if self.inflight.is_empty() {
                return;
            }
            for m in std::mem::take(&mut self.inflight) {
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    let _ = n.raw.step(m);
                }
            }
        }
        panic!("network did not settle");
    }

    fn tick_until_leader(&mut self) -> u64 {
        for _ in 0..200 {
            for n in self.nodes.values_mut() {
                n.raw.tick();
            }
            self.settle();
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.raw.raft.state == StateRole::Leader)
                .map(|(id, _)| *id)
                .collect();
            assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
            if let Some(&l) = leaders.first() {
                return l;
            }
        }
        panic!("no leader elected");
    }
}

#[test]
fn three_nodes_elect_commit_read_and_change_membership() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let leader = c.tick_until_leader();
    let follower = if leader == 1 { 2 } else { 1 };

    c.propose(leader, b"a");
    c.propose(follower, b"b");
    c.settle();
    for (id, n) in &c.nodes {
        assert_eq!(n.applied, vec![b"a".to_vec(), b"b".to_vec()], "node {id}");
    }

    c.nodes
        .get_mut(&follower)
        .unwrap()
        .raw
        .read_index(b"r1".to_vec());
    c.settle();
    // The read state was handed out in a Ready; check the commit index it must cover instead.
    let commit = c.nodes[&leader].raw.raft.raft_log.committed;
    assert!(commit >= 3);

    // The leader cannot remove itself; removing another voter works.
    let rm_leader = ConfChange {
        change_type: ConfChangeType::RemoveNode,
        node_id: leader,
        ..Default::default()
    };
    let err = c
        .nodes
        .get_mut(&leader)
        .unwrap()
        .raw
        .propose_conf_change(vec![], rm_leader)
        .unwrap_err();
    assert!(
        err.to_string().contains("transfer leadership first"),
        "{err}"
    );
    let rm = ConfChange {
        change_type: ConfChangeType::RemoveNode,
        node_id: follower,
        ..Default::default()
    };
    c.nodes
        .get_mut(&leader)
        .unwrap()
        .raw
        .propose_conf_change(vec![], rm)
        .unwrap();
    c.settle();
    let cs = c.nodes[&leader].store.initial_state_conf();
    assert!(!cs.contains(&follower), "{cs:?}");
    c.propose(leader, b"c");
    c.settle();
    assert_eq!(c.nodes[&leader].applied.last().unwrap(), b"c");
}

trait ConfOf {
    fn initial_state_conf(&self) -> Vec<u64>;
}

impl ConfOf for MemStorage {
    fn initial_state_conf(&self) -> Vec<u64> {
        use raftlog::Storage;
        self.initial_state().unwrap().conf_state.voters
    }
}

/// With `skip_bcast_commit`, a follower learns a new commit index only with the next append or
/// heartbeat; `RawNode::ping` on the leader sends that heartbeat at once (and is a no-op on a
/// follower).
#[test]
fn ping_spreads_the_commit_index_when_commits_are_not_broadcast() {
    let mut c = Cluster::with_config(&[1, 2, 3], |id| Config {
        skip_bcast_commit: true,
        ..config(id)
    });
    let leader = c.tick_until_leader();
    let follower = if leader == 1 { 2 } else { 1 };
    c.propose(leader, b"a");
    c.settle();
    let commit = c.nodes[&leader].raw.raft.raft_log.committed;
    assert_eq!(c.nodes[&leader].applied, vec![b"a".to_vec()]);
    assert!(
        c.nodes[&follower].raw.raft.raft_log.committed < commit,
        "the follower learned the commit without a broadcast"
    );
    c.nodes.get_mut(&follower).unwrap().raw.ping();
    c.settle();
    assert!(c.nodes[&follower].raw.raft.raft_log.committed < commit);
    c.nodes.get_mut(&leader).unwrap().raw.ping();
    c.settle();
    for (id, n) in &c.nodes {
        assert_eq!(n.raw.raft.raft_log.committed, commit, "node {id}");
        assert_eq!(n.applied, vec![b"a".to_vec()], "node {id}");
    }
}
