//! [`Config`]: the knobs of one Raft node, validated once by [`Config::validate`].
//!
//! Every default is chosen for Basalt's 100 ms tick (DESIGN.md) and documented beside its field.

use crate::errors::{Error, Result};

/// 1 MiB, the unit of the size defaults.
const MIB: u64 = 1024 * 1024;

/// How a leader serves read-only queries ([`crate::RawNode::read_index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// Confirm leadership with a round of heartbeats acknowledged by a quorum before answering:
    /// linearizable whatever the clocks do. The default, because it needs no clock assumption.
    #[default]
    Safe,
    /// Answer from the leader's lease (it heard a quorum within the election timeout): one
    /// round trip cheaper, but correct only if clock drift stays below the lease. Requires
    /// `check_quorum`.
    LeaseBased,
}

/// The configuration of one Raft node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must not be 0 (0 means "none" in the protocol).
    pub id: u64,
    /// Ticks without hearing a leader before a follower campaigns. Default 10: one second at
    /// the 100 ms tick, the election timeout etcd operators know.
    pub election_tick: usize,
    /// Ticks between leader heartbeats. Default 2: 200 ms, five heartbeats per election
    /// timeout, so a lost heartbeat or two never triggers an election, at half the idle traffic
    /// of a 100 ms heartbeat (a store hosts many groups).
    pub heartbeat_tick: usize,
    /// The index the application has already applied (on restart); committed entries up to it
    /// are not handed out again. Default 0.
    pub applied: u64,
    /// Upper bound of the entry bytes in one `MsgAppend` (at least one entry is always sent).
    /// Default 1 MiB: large enough to batch, small enough not to stall heartbeats behind it.
    pub max_size_per_msg: u64,
    /// Appends in flight to one follower in the replicate state. Default 256: enough to fill a
    /// fast link at 1 MiB messages without unbounded buffering.
    pub max_inflight_msgs: usize,
    /// Bytes of entries in flight to one follower (0: no byte limit). Default 32 MiB, so a
    /// slow follower cannot make the leader buffer 256 full-size messages.
    pub max_inflight_bytes: u64,
    /// Payload bytes of proposals appended but not yet committed, above which new proposals are
    /// dropped (back-pressure). Default 256 MiB. Must be positive.
    pub max_uncommitted_size: u64,
    /// The leader steps down when it has not heard from a quorum within an election timeout.
    /// Default ON: a partitioned leader must stop serving (and is required for lease reads).
    pub check_quorum: bool,
    /// Campaign in a pre-vote round first, so a node returning from a partition cannot disrupt
    /// the group by bumping the term. Default ON: a storage engine wants stable leaders.
    pub pre_vote: bool,
    /// How read-only queries are served. Default [`ReadOnlyOption::Safe`].
    pub read_only_option: ReadOnlyOption,
    /// Do not broadcast an append just to spread a new commit index (heartbeats carry it).
    /// Default off: followers learn commits one round trip sooner.
    pub skip_bcast_commit: bool,
    /// Merge appends to the same peer that are queued in one Ready into one message. With it,
    /// a leader's `RawNode::propose` only appends: the appends to the peers are built when the
    /// next Ready is, one per peer for every entry proposed since (flow control then counts
    /// that message once, not once per entry). Default off (raft-rs's default); turn on for
    /// throughput.
    pub batch_append: bool,
    /// Election priority: with equally up-to-date logs, a node refuses its vote to a candidate
    /// of lower priority. Default 0 (all equal).
    pub priority: i64,
    /// Bytes of committed entries handed out per `Ready`. Default 64 MiB: bounds the memory of
    /// one apply batch after a long catch-up.
    pub max_committed_size_per_ready: u64,
    /// Lower bound (inclusive) of the randomized election timeout in ticks; 0 means
    /// `election_tick`.
    pub min_election_tick: usize,
    /// Upper bound (exclusive) of the randomized election timeout in ticks; 0 means
    /// `2 * election_tick`.
    pub max_election_tick: usize,
    /// Seed of the election-timeout RNG (mixed with `id`). Default 0; set it per run to replay.
    pub rng_seed: u64,
    /// How far past the persisted index committed entries may be applied (entries committed by
    /// a quorum but not yet durable here). Default 0: apply only what is persisted locally.
    pub max_apply_unpersisted_log_limit: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 2,
            applied: 0,
            max_size_per_msg: MIB,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 * MIB,
            max_uncommitted_size: 256 * MIB,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            skip_bcast_commit: false,
            batch_append: false,
            priority: 0,
            max_committed_size_per_ready: 64 * MIB,
            min_election_tick: 0,
            max_election_tick: 0,
            rng_seed: 0,
            max_apply_unpersisted_log_limit: 0,
        }
    }
}

impl Config {
    /// The default configuration for node `id`.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            ..Default::default()
        }
    }

    /// The effective lower bound of the randomized election timeout.
    pub fn min_election_tick(&self) -> usize {
        if self.min_election_tick == 0 {
            self.election_tick
        } else {
            self.min_election_tick
        }
    }

    /// The effective (exclusive) upper bound of the randomized election timeout.
    pub fn max_election_tick(&self) -> usize {
        if self.max_election_tick == 0 {
            2 * self.election_tick
        } else {
            self.max_election_tick
        }
    }

    /// Checks every field and combination; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::ConfigInvalid(msg));
        if self.id == 0 {
            return bad("id: must not be 0 (0 means no node)".into());
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick: must be positive".into());
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad(format!(
                "election_tick: {} must be greater than heartbeat_tick {}",
                self.election_tick, self.heartbeat_tick
            ));
        }
        let (min, max) = (self.min_election_tick(), self.max_election_tick());
        if min < self.election_tick {
            return bad(format!(
                "min_election_tick: {min} is below election_tick {}",
                self.election_tick
            ));
        }
        if min >= max {
            return bad(format!(
                "max_election_tick: {max} must be greater than min_election_tick {min}"
            ));
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs: must be positive".into());
        }
        if self.max_uncommitted_size == 0 {
            return bad("max_uncommitted_size: must be positive".into());
        }
        if self.max_size_per_msg == 0 {
            return bad(
                "max_size_per_msg: must be positive (at least one entry is always sent)".into(),
            );
        }
        if self.max_committed_size_per_ready == 0 {
            return bad("max_committed_size_per_ready: must be positive".into());
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return bad("read_only_option: LeaseBased requires check_quorum".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: &Config) -> String {
        match c.validate() {
            Err(Error::ConfigInvalid(msg)) => msg.split(':').next().unwrap_or_default().to_string(),
            other => panic!("expected ConfigInvalid, got {other:?}"),
        }
    }

    #[test]
    fn default_with_id_is_valid() {
        Config::new(1).validate().unwrap();
        assert!(
            Config::default().validate().is_err(),
            "id 0 must be refused"
        );
    }

    #[test]
    fn each_bad_combination_names_its_field() {
        let base = Config::new(1);
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    id: 0,
                    ..base.clone()
                },
                "id",
            ),
            (
                Config {
                    heartbeat_tick: 0,
                    ..base.clone()
                },
                "heartbeat_tick",
            ),
            (
                Config {
                    election_tick: 2,
                    heartbeat_tick: 2,
                    ..base.clone()
                },
                "election_tick",
            ),
            (
                Config {
                    min_election_tick: 5,
                    ..base.clone()
                },
                "min_election_tick",
            ),
            (
                Config {
                    min_election_tick: 20,
                    max_election_tick: 20,
                    ..base.clone()
                },
                "max_election_tick",
            ),
            (
                Config {
                    max_inflight_msgs: 0,
                    ..base.clone()
                },
                "max_inflight_msgs",
            ),
            (
                Config {
                    max_uncommitted_size: 0,
                    ..base.clone()
                },
                "max_uncommitted_size",
            ),
            (
                Config {
                    max_size_per_msg: 0,
                    ..base.clone()
                },
                "max_size_per_msg",
            ),
            (
                Config {
                    max_committed_size_per_ready: 0,
                    ..base.clone()
                },
                "max_committed_size_per_ready",
            ),
            (
                Config {
                    read_only_option: ReadOnlyOption::LeaseBased,
                    check_quorum: false,
                    ..base.clone()
                },
                "read_only_option",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(field_of(&c), field, "{c:?}");
        }
    }
}
