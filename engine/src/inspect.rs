//! `basalt inspect`: the superblocks, the segment table and the log's extent of a store, with
//! every checksum verified (the log is scanned exactly as recovery scans it, read-only); and the
//! state store's checkpoint in force, loaded exactly as opening the store loads it (which
//! verifies the state root, every block and record of the checkpoint, and the checkpoint's own
//! checksum), without writing anything.

use std::fmt;

use crate::error::Result;
use crate::format::{open_checked, read_superblocks};
use crate::io::Io;
use crate::layout::segment::SegmentUsage;
use crate::layout::superblock::SuperblockDefect;
use crate::layout::Superblock;
use crate::log::recovery::{recover, RecoveryReport};
use crate::log::DeviceSlot;
use crate::state::{StateConfig, StateStore};

/// What `inspect` found.
#[derive(Debug)]
pub struct InspectReport {
    /// Device label.
    pub device: String,
    /// Both superblock copies, decoded or why not.
    pub superblocks: [std::result::Result<Superblock, SuperblockDefect>; 2],
    /// The copy in use.
    pub superblock_in_use: usize,
    /// The scan's findings.
    pub recovery: RecoveryReport,
    /// `(tail, head)` segments of the log.
    pub extent: (u32, u32),
    /// Segments in use, tail first, with their usage.
    pub segments: Vec<(u32, SegmentUsage)>,
    /// Regions in the log.
    pub region_count: usize,
}

/// The state store's checkpoint in force, as `inspect_state` loaded it.
#[derive(Debug)]
pub struct StateReport {
    /// Sequence of the checkpoint in force (0: none yet).
    pub checkpoint_sequence: u64,
    /// `(region, applied index, keys)` of each region.
    pub regions: Vec<(u64, u64, u64)>,
    /// `(segment, generation, live bytes, written bytes)` of each state segment in use.
    pub segments: Vec<(u32, u64, u64, u64)>,
    /// Segments in the state partition.
    pub segment_count: u32,
}

/// Loads the state store's checkpoint in force from two handles onto the store's device (the
/// state store reads through one and would write through the other; loading writes nothing).
pub fn inspect_state(
    write_io: Box<dyn Io>,
    read_io: Box<dyn Io>,
    sb: &Superblock,
    label: &str,
) -> Result<StateReport> {
    let store = StateStore::open(write_io, read_io, sb, StateConfig::new(label))?;
    let regions = store
        .region_ids()
        .into_iter()
        .map(|r| {
            let applied = store.region_state(r).map_or(0, |s| s.applied_index);
            (r, applied, store.key_count(r).unwrap_or(0))
        })
        .collect();
    let segments = store
        .segment_stats()
        .into_iter()
        .map(|s| (s.segment, s.generation, s.live_bytes, s.written_bytes))
        .collect();
    Ok(StateReport {
        checkpoint_sequence: store.checkpoint_sequence(),
        regions,
        segments,
        segment_count: sb.segment_count - sb.log_segment_count,
    })
}

impl fmt::Display for StateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segment_count == 0 {
            return writeln!(f, "state store: none (a log-only store)");
        }
        if self.checkpoint_sequence == 0 {
            return writeln!(
                f,
                "state store: no checkpoint yet ({} segments free)",
                self.segment_count
            );
        }
        let keys: u64 = self.regions.iter().map(|r| r.2).sum();
        writeln!(
            f,
            "state store: checkpoint {} in force, {} regions, {keys} keys, {} of {} segments in use (checksums verified)",
            self.checkpoint_sequence,
            self.regions.len(),
            self.segments.len(),
            self.segment_count
        )?;
        writeln!(f, " region  applied-index  keys")?;
        for (r, applied, n) in &self.regions {
            writeln!(f, "{r:>7}  {applied:>13}  {n}")?;
        }
        writeln!(f, "segment  generation  live-bytes  written-bytes")?;
        for (s, g, live, written) in &self.segments {
            writeln!(f, "{s:>7}  {g:>10}  {live:>10}  {written}")?;
        }
        Ok(())
    }
}

impl InspectReport {
    /// Whether any checksum failed (a bad superblock copy or corruption in the log). A torn
    /// tail is normal after a crash and is not counted.
    pub fn corrupt(&self) -> bool {
        self.superblocks.iter().any(|c| c.is_err()) || !self.recovery.corruptions.is_empty()
    }
}

/// Inspects the store on `io` without writing to it.
pub fn inspect(mut io: Box<dyn Io>, label: &str) -> Result<InspectReport> {
    let superblocks = read_superblocks(io.as_mut(), label)?;
    let (copy, sb) = open_checked(io.as_mut(), label)?;
    let mut dev = DeviceSlot::new(io);
    let rec = recover(&mut dev, &sb, label, 0)?;
    let table = &rec.index.segments;
    let segments = table
        .in_use()
        .into_iter()
        .map(|s| (s, table.usage(s).clone()))
        .collect();
    Ok(InspectReport {
        device: label.into(),
        superblocks,
        superblock_in_use: copy,
        extent: (table.tail(), table.head()),
        segments,
        region_count: rec.index.region_ids().len(),
        recovery: rec.report,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device {}", self.device)?;
        for (i, c) in self.superblocks.iter().enumerate() {
            let mark = if i == self.superblock_in_use {
                " (in use)"
            } else {
                ""
            };
            match c {
                Ok(sb) => {
                    writeln!(
                        f,
                        "superblock copy {i}{mark}: ok, sequence {}, format version {}",
                        sb.sequence, sb.version
                    )?;
                    writeln!(
                        f,
                        "  store id {}, cluster id {:032x}",
                        sb.store_id, sb.cluster_id
                    )?;
                    writeln!(
                        f,
                        "  block size {}, segment size {}, {} segments from offset {}, device size {}",
                        sb.block_size, sb.segment_size_bytes, sb.segment_count, sb.data_start_offset, sb.device_size_bytes
                    )?;
                    writeln!(
                        f,
                        "  log ring: segments 0..{}; state store: segments {}..{}",
                        sb.log_segment_count, sb.log_segment_count, sb.segment_count
                    )?;
                    let cp = sb.checkpoint;
                    writeln!(
                        f,
                        "  checkpoint: segment {}, offset {}, sequence {}",
                        cp.segment, cp.offset, cp.sequence
                    )?;
                }
                Err(d) => writeln!(f, "superblock copy {i}: INVALID ({d})")?,
            }
        }
        writeln!(
            f,
            "log: segments {}..={} (tail..head), {} regions",
            self.extent.0, self.extent.1, self.region_count
        )?;
        writeln!(f, "segment  first-seq  batches  bytes")?;
        for (s, u) in &self.segments {
            let first = u
                .first_batch
                .map_or("-".to_string(), |c| c.sequence.to_string());
            writeln!(
                f,
                "{s:>7}  {first:>9}  {:>7}  {}",
                u.batch_count, u.bytes_used
            )?;
        }
        let r = &self.recovery;
        writeln!(
            f,
            "scanned {} batches, {} records, {} bytes, next sequence {}",
            r.batches, r.records, r.bytes_scanned, r.next_sequence
        )?;
        if let Some(t) = &r.torn_tail {
            writeln!(
                f,
                "torn tail (unacknowledged last write) at offset {}, sequence {}",
                t.offset, t.sequence
            )?;
        }
        for c in &r.corruptions {
            writeln!(
                f,
                "CORRUPT: batch {} at offset {}: {}; regions {:?}",
                c.sequence, c.offset, c.detail, c.regions
            )?;
        }
        writeln!(
            f,
            "checksums: {}",
            if self.corrupt() {
                "FAILED"
            } else {
                "all verified"
            }
        )
    }
}
