//! The `sim` backend's fault model: for many seeds, power loss keeps every flushed or durable
//! sector and only ever leaves old or newly written contents (never invented bytes); torn writes
//! land a strict sector prefix; misdirected writes land elsewhere; read errors, bit rot, write
//! and flush errors (which latch) happen as configured; latency reorders completions; and the
//! same seed with the same calls gives the same result, bit for bit.

use engine::io::sim::{FaultConfig, SimIo, SimStats};
use engine::io::{run_one, AlignedBuf, Completion, Geometry, Io, IoError, IoKind, IoOp};

const BLOCK: usize = 512;
const GEOMETRY: Geometry = Geometry {
    block_size: BLOCK as u32,
    capacity_bytes: 256 * BLOCK as u64,
};

fn filled(len: usize, byte: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len, BLOCK);
    buf.as_mut_slice().fill(byte);
    buf
}

fn write(
    io: &mut SimIo,
    offset: u64,
    len: usize,
    byte: u8,
    durable: bool,
) -> Result<usize, IoError> {
    run_one(
        io,
        IoOp::Write {
            tag: offset,
            offset,
            buf: filled(len, byte),
            durable,
        },
    )
    .unwrap()
    .result
}

fn read(io: &mut SimIo, offset: u64, len: usize) -> Result<Vec<u8>, IoError> {
    let c = run_one(
        io,
        IoOp::Read {
            tag: 1,
            offset,
            buf: AlignedBuf::new(len, BLOCK),
        },
    )
    .unwrap();
    c.result.map(|_| c.buf.unwrap().as_slice().to_vec())
}

fn flush(io: &mut SimIo) -> Result<usize, IoError> {
    run_one(io, IoOp::Flush { tag: 0 }).unwrap().result
}

/// Sector `s` of the durable image is all `byte`.
fn sector_is(image: &[u8], s: usize, byte: u8) -> bool {
    image[s * BLOCK..(s + 1) * BLOCK].iter().all(|&b| b == byte)
}

#[test]
fn power_loss_keeps_flushed_data_and_invents_nothing() {
    let mut totals = SimStats::default();
    for seed in 0..300u64 {
        let mut io = SimIo::new(seed, GEOMETRY, FaultConfig::none());
        // Sectors 0..32 = 0xA1, flushed; sectors 32..40 = 0xD2 durable write (no flush).
        write(&mut io, 0, 32 * BLOCK, 0xA1, false).unwrap();
        flush(&mut io).unwrap();
        write(&mut io, 32 * BLOCK as u64, 8 * BLOCK, 0xD2, true).unwrap();
        // Unflushed: 16..48 = 0xB3 (over flushed, durable and fresh sectors), 60..64 = 0xC4.
        write(&mut io, 16 * BLOCK as u64, 32 * BLOCK, 0xB3, false).unwrap();
        write(&mut io, 60 * BLOCK as u64, 4 * BLOCK, 0xC4, false).unwrap();
        io.power_loss();
        let image = io.snapshot_disk();
        for s in 0..256 {
            let ok = match s {
                0..=15 => sector_is(&image, s, 0xA1),
                16..=31 => sector_is(&image, s, 0xA1) || sector_is(&image, s, 0xB3),
                32..=39 => sector_is(&image, s, 0xD2) || sector_is(&image, s, 0xB3),
                40..=47 => sector_is(&image, s, 0) || sector_is(&image, s, 0xB3),
                60..=63 => sector_is(&image, s, 0) || sector_is(&image, s, 0xC4),
                _ => sector_is(&image, s, 0),
            };
            assert!(
                ok,
                "SEED={seed}: sector {s} holds invented data after power loss"
            );
        }
        assert_eq!(io.volatile_sector_count(), 0);
        // The device stays usable after a power loss.
        write(&mut io, 0, BLOCK, 0xEE, false).unwrap();
        let stats = io.stats();
        totals.sectors_kept_at_power_loss += stats.sectors_kept_at_power_loss;
        totals.sectors_dropped_at_power_loss += stats.sectors_dropped_at_power_loss;
    }
    assert!(
        totals.sectors_kept_at_power_loss > 0 && totals.sectors_dropped_at_power_loss > 0,
        "{totals:?}"
    );
}

#[test]
fn reads_see_completed_writes_before_they_are_durable() {
    let mut io = SimIo::new(1, GEOMETRY, FaultConfig::none());
    write(&mut io, 0, 4 * BLOCK, 0x11, false).unwrap();
    assert_eq!(read(&mut io, 0, 4 * BLOCK).unwrap(), vec![0x11; 4 * BLOCK]);
    assert_eq!(io.read_durable(0, BLOCK), vec![0; BLOCK]);
    assert_eq!(io.volatile_sector_count(), 4);
    flush(&mut io).unwrap();
    assert_eq!(io.volatile_sector_count(), 0);
    assert_eq!(io.read_durable(0, 4 * BLOCK), vec![0x11; 4 * BLOCK]);
    // A process restart (no power loss) keeps the device cache.
    write(&mut io, 0, BLOCK, 0x22, false).unwrap();
    let mut io = io.reopen();
    assert_eq!(read(&mut io, 0, BLOCK).unwrap(), vec![0x22; BLOCK]);
}

#[test]
fn torn_write_lands_a_strict_sector_prefix() {
    let mut prefixes = std::collections::BTreeSet::new();
    for seed in 0..64u64 {
        let faults = FaultConfig {
            torn_write_prob: 1.0,
            ..FaultConfig::none()
        };
        let mut io = SimIo::new(seed, GEOMETRY, faults);
        assert_eq!(
            write(&mut io, 8 * BLOCK as u64, 8 * BLOCK, 0x77, false).unwrap(),
            8 * BLOCK
        );
        let data = io.read_visible(8 * BLOCK as u64, 8 * BLOCK);
        let landed = (0..8).take_while(|&s| sector_is(&data, s, 0x77)).count();
        assert!(landed < 8, "SEED={seed}: a torn write landed whole");
        assert!(
            (landed..8).all(|s| sector_is(&data, s, 0)),
            "SEED={seed}: not a prefix"
        );
        prefixes.insert(landed);
        assert_eq!(io.stats().torn_writes, 1);
    }
    assert!(
        prefixes.len() > 3,
        "torn prefixes do not vary: {prefixes:?}"
    );
}

#[test]
fn torn_write_reporting_error_latches() {
    let faults = FaultConfig {
        torn_write_prob: 1.0,
        torn_write_reports_error: true,
        ..FaultConfig::none()
    };
    let mut io = SimIo::new(3, GEOMETRY, faults);
    let err = write(&mut io, 0, 4 * BLOCK, 0x77, false).unwrap_err();
    assert!(matches!(err, IoError::Injected("torn write")), "{err:?}");
    assert!(io.is_latched());
    let again = io.submit(IoOp::Flush { tag: 9 });
    assert!(matches!(again, Err(IoError::Latched)));
    assert!(matches!(io.kick(), Err(IoError::Latched)));
}

#[test]
fn write_and_flush_errors_latch_until_reopen() {
    let mut io = SimIo::new(
        4,
        GEOMETRY,
        FaultConfig {
            write_error_prob: 1.0,
            ..FaultConfig::none()
        },
    );
    assert!(matches!(
        write(&mut io, 0, BLOCK, 1, false),
        Err(IoError::Injected("write error"))
    ));
    assert_eq!(
        io.read_visible(0, BLOCK),
        vec![0; BLOCK],
        "a failed write lands nothing"
    );
    let err = io.submit(IoOp::Read {
        tag: 1,
        offset: 0,
        buf: AlignedBuf::new(BLOCK, BLOCK),
    });
    assert!(matches!(err, Err(IoError::Latched)));
    io.set_faults(FaultConfig {
        flush_error_prob: 1.0,
        ..FaultConfig::none()
    });
    let mut io = io.reopen();
    write(&mut io, 0, BLOCK, 2, false).unwrap();
    assert!(matches!(
        flush(&mut io),
        Err(IoError::Injected("flush error"))
    ));
    assert_eq!(
        io.read_durable(0, BLOCK),
        vec![0; BLOCK],
        "a failed flush makes nothing durable"
    );
    assert!(matches!(
        io.submit(IoOp::Flush { tag: 2 }),
        Err(IoError::Latched)
    ));
}

#[test]
fn misdirected_write_lands_elsewhere() {
    let faults = FaultConfig {
        misdirect_prob: 1.0,
        ..FaultConfig::none()
    };
    let mut io = SimIo::new(5, GEOMETRY, faults);
    write(&mut io, 64 * BLOCK as u64, 2 * BLOCK, 0x99, false).unwrap();
    assert_eq!(
        io.read_visible(64 * BLOCK as u64, 2 * BLOCK),
        vec![0; 2 * BLOCK]
    );
    let image = io.read_visible(0, GEOMETRY.capacity_bytes as usize);
    let landed: Vec<usize> = (0..256).filter(|&s| sector_is(&image, s, 0x99)).collect();
    assert_eq!(
        landed.len(),
        2,
        "the data must land somewhere, block-aligned"
    );
    assert_eq!(landed[1], landed[0] + 1);
    assert_eq!(io.stats().misdirected_writes, 1);
}

#[test]
fn read_errors_targeted_and_random_do_not_latch() {
    let mut io = SimIo::new(6, GEOMETRY, FaultConfig::none());
    io.fail_reads_at(3 * BLOCK as u64);
    assert!(matches!(
        read(&mut io, 0, 4 * BLOCK),
        Err(IoError::Injected("read error"))
    ));
    assert!(read(&mut io, 4 * BLOCK as u64, BLOCK).is_ok());
    io.clear_read_failures();
    assert!(read(&mut io, 0, 4 * BLOCK).is_ok());
    io.set_faults(FaultConfig {
        read_error_prob: 1.0,
        ..FaultConfig::none()
    });
    assert!(read(&mut io, 0, BLOCK).is_err());
    assert!(!io.is_latched());
    write(&mut io, 0, BLOCK, 5, false).unwrap();
}

fn bits_differing(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[test]
fn bit_rot_flips_exactly_one_stored_bit() {
    let mut io = SimIo::new(7, GEOMETRY, FaultConfig::none());
    write(&mut io, 0, 4 * BLOCK, 0x5A, false).unwrap();
    flush(&mut io).unwrap();
    io.rot(2 * BLOCK as u64 + 17);
    let data = read(&mut io, 0, 4 * BLOCK).unwrap();
    assert_eq!(bits_differing(&data, &[0x5A; 4 * BLOCK]), 1);
    assert!(sector_is(&data, 0, 0x5A) && sector_is(&data, 1, 0x5A) && sector_is(&data, 3, 0x5A));
    // By probability, on read: the rot is stored, so it stays.
    io.set_faults(FaultConfig {
        bit_rot_prob: 1.0,
        ..FaultConfig::none()
    });
    let rotted = read(&mut io, 8 * BLOCK as u64, BLOCK).unwrap();
    assert_eq!(bits_differing(&rotted, &[0; BLOCK]), 1);
    io.set_faults(FaultConfig::none());
    assert_eq!(read(&mut io, 8 * BLOCK as u64, BLOCK).unwrap(), rotted);
}

#[test]
fn latency_delays_and_reorders_completions() {
    let faults = FaultConfig {
        latency_ops: (3, 3),
        ..FaultConfig::none()
    };
    let mut io = SimIo::new(8, GEOMETRY, faults);
    io.submit(IoOp::Flush { tag: 1 }).unwrap();
    let mut out = Vec::new();
    for _ in 0..3 {
        assert_eq!(io.reap(&mut out, 0).unwrap(), 0, "completed too early");
    }
    assert_eq!(io.reap(&mut out, 0).unwrap(), 1);
    // min_complete blocks (advances simulated time) until enough are done.
    io.submit(IoOp::Flush { tag: 2 }).unwrap();
    assert_eq!(io.reap(&mut out, 1).unwrap(), 1);
    // Variable latency: completions come back out of submission order for some seed.
    let reordered = (0..20u64).any(|seed| {
        let faults = FaultConfig {
            latency_ops: (0, 6),
            ..FaultConfig::none()
        };
        let mut io = SimIo::new(seed, GEOMETRY, faults);
        let mut out: Vec<Completion> = Vec::new();
        for tag in 0..8 {
            io.submit(IoOp::Flush { tag }).unwrap();
        }
        while io.in_flight() > 0 {
            io.reap(&mut out, 1).unwrap();
        }
        out.windows(2).any(|w| w[0].tag > w[1].tag)
    });
    assert!(reordered);
}

/// A fault-heavy random run; returns everything observable.
fn chaotic_run(seed: u64) -> (Vec<u8>, Vec<String>, SimStats) {
    let faults = FaultConfig {
        latency_ops: (0, 4),
        torn_write_prob: 0.1,
        torn_write_reports_error: false,
        bit_rot_prob: 0.1,
        misdirect_prob: 0.1,
        read_error_prob: 0.1,
        write_error_prob: 0.0,
        flush_error_prob: 0.0,
    };
    let mut io = SimIo::new(seed, GEOMETRY, faults);
    let mut log = Vec::new();
    let mut out = Vec::new();
    for step in 0..400u64 {
        let offset = (step * 7919 % 250) * BLOCK as u64;
        let op = match step % 5 {
            0 => IoOp::Flush { tag: step },
            1 | 2 => IoOp::Read {
                tag: step,
                offset,
                buf: AlignedBuf::new(4 * BLOCK, BLOCK),
            },
            _ => IoOp::Write {
                tag: step,
                offset,
                buf: filled(2 * BLOCK, step as u8),
                durable: step % 3 == 0,
            },
        };
        if io.in_flight() >= io.queue_depth() {
            io.reap(&mut out, 1).unwrap();
        }
        io.submit(op).unwrap();
        io.reap(&mut out, 0).unwrap();
        if step % 97 == 96 {
            io.power_loss();
        }
    }
    while io.in_flight() > 0 {
        io.reap(&mut out, 1).unwrap();
    }
    for c in &out {
        let data = c
            .buf
            .as_ref()
            .map(|b| b.as_slice().iter().map(|&x| u64::from(x)).sum::<u64>());
        log.push(format!("{} {:?} {:?} {:?}", c.tag, c.kind, c.result, data));
    }
    (io.snapshot_disk(), log, io.stats().clone())
}

#[test]
fn same_seed_same_outcome() {
    let a = chaotic_run(42);
    let b = chaotic_run(42);
    assert!(a.0 == b.0, "disk images differ for the same seed");
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    let stats = &a.2;
    assert!(stats.torn_writes > 0 && stats.misdirected_writes > 0 && stats.rotted_sectors > 0);
    assert!(stats.read_errors > 0 && stats.power_losses == 4);
    let c = chaotic_run(43);
    assert!(
        a.0 != c.0 || a.1 != c.1,
        "a different seed should give a different run"
    );
    assert!(a
        .1
        .iter()
        .any(|l| l.contains(&format!("{:?}", IoKind::Read))));
}

/// Two handles onto one simulated disk see each other's writes, a flush through one makes the
/// other's completed writes durable, and a power loss through either drops what is volatile.
#[test]
fn shared_handles_see_one_disk_and_one_write_cache() {
    let mut a = SimIo::new(11, GEOMETRY, FaultConfig::none());
    let mut b = a.share();
    write(&mut a, 0, BLOCK, 0xaa, false).unwrap();
    write(&mut b, BLOCK as u64, BLOCK, 0xbb, false).unwrap();
    assert_eq!(b.read_visible(0, BLOCK), vec![0xaa; BLOCK]);
    assert_eq!(a.read_visible(BLOCK as u64, BLOCK), vec![0xbb; BLOCK]);
    assert_eq!(a.volatile_sector_count(), 2);
    run_one(&mut b, IoOp::Flush { tag: 9 })
        .unwrap()
        .result
        .unwrap();
    assert_eq!(a.read_durable(0, 2 * BLOCK)[..BLOCK], vec![0xaa; BLOCK][..]);
    assert_eq!(a.volatile_sector_count(), 0);
    let mut lost = false;
    for i in 1..=64u8 {
        write(&mut b, 2 * BLOCK as u64, BLOCK, i, false).unwrap();
        a.power_loss();
        assert_eq!(
            b.volatile_sector_count(),
            0,
            "power loss via a left b's cache"
        );
        lost |= b.read_visible(2 * BLOCK as u64, BLOCK) != vec![i; BLOCK];
    }
    assert!(lost, "64 power losses never dropped b's volatile write");
    assert_eq!(
        b.read_visible(0, BLOCK),
        vec![0xaa; BLOCK],
        "durable data lost"
    );
}
