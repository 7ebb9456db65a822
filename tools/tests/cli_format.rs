//! `basalt format` and `basalt inspect` as a user runs them: the built binary on files in a temp
//! dir. Proves ids are generated and printed, foreign signatures and existing stores are refused
//! without --force, bad paths, too small devices and bad block sizes are clear errors naming the
//! device, and inspect exits non-zero on a corrupted superblock.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output};

fn basalt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(args)
        .output()
        .expect("run basalt")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn file(dir: &Path, name: &str, size: u64) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|f| f.set_len(size))
        .expect("create");
    p.display().to_string()
}

/// `basalt format` of `dev` with 1 MiB segments, through the sync backend, plus `extra`.
fn format_small(dev: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "format",
        dev,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
    ];
    args.extend_from_slice(extra);
    basalt(&args)
}

#[test]
fn format_then_inspect_then_refuse_reformat() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = file(dir.path(), "store.img", 16 << 20);
    let o = format_small(&dev, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("store id:") && text(&o).contains("cluster id:"),
        "{}",
        text(&o)
    );

    let o = basalt(&["inspect", &dev, "--backend", "sync"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("superblock copy 1 (in use): ok")
            && text(&o).contains("all verified")
            && text(&o).contains("state store: no checkpoint yet"),
        "{}",
        text(&o)
    );

    let o = format_small(&dev, &[]);
    assert!(
        !o.status.success() && text(&o).contains("already holds Basalt store"),
        "{}",
        text(&o)
    );
    let o = format_small(
        &dev,
        &["--force", "--store-id", "42", "--cluster-id", "abc"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("store id:     42")
            && text(&o).contains("00000000000000000000000000000abc"),
        "{}",
        text(&o)
    );

    // Damage superblock copy 1 (the newest): inspect reports it and exits 2.
    let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.seek(SeekFrom::Start(512 * 1024 + 100)).unwrap();
    f.write_all(&[0xff; 8]).unwrap();
    drop(f);
    let o = basalt(&["inspect", &dev, "--backend", "sync"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("INVALID"), "{}", text(&o));
}

#[test]
fn foreign_signature_is_refused_without_force() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = file(dir.path(), "ext4.img", 16 << 20);
    let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.seek(SeekFrom::Start(1080)).unwrap();
    f.write_all(&[0x53, 0xef]).unwrap();
    drop(f);
    let o = format_small(&dev, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("ext2/3/4") && text(&o).contains(&dev),
        "{}",
        text(&o)
    );
    let o = format_small(&dev, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bad_devices_and_options_are_clear_errors() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let missing = dir.path().join("nope.img").display().to_string();
    let o = basalt(&["format", &missing]);
    assert!(
        !o.status.success() && text(&o).contains(&missing),
        "{}",
        text(&o)
    );
    let o = basalt(&["inspect", &missing]);
    assert!(
        !o.status.success() && text(&o).contains(&missing),
        "{}",
        text(&o)
    );

    let small = file(dir.path(), "small.img", 2 << 20);
    let o = format_small(&small, &[]);
    assert!(
        !o.status.success() && text(&o).contains("too small") && text(&o).contains(&small),
        "{}",
        text(&o)
    );

    let dev = file(dir.path(), "dev.img", 16 << 20);
    let o = basalt(&["format", &dev, "--block-size", "3000", "--backend", "sync"]);
    assert!(
        !o.status.success() && text(&o).contains("block_size"),
        "{}",
        text(&o)
    );

    let blank = file(dir.path(), "blank.img", 16 << 20);
    let o = basalt(&["inspect", &blank, "--backend", "sync"]);
    assert!(
        !o.status.success() && text(&o).contains("not a Basalt store") && text(&o).contains(&blank),
        "{}",
        text(&o)
    );

    let o = basalt(&["format", &dev, "--cluster-id", "xyz"]);
    assert!(
        !o.status.success() && text(&o).contains("cluster-id"),
        "{}",
        text(&o)
    );
}

/// `basalt demo` itself runs in tests/demo.rs; here only its options are listed.
#[test]
fn demo_lists_its_options() {
    let o = basalt(&["demo", "--help"]);
    assert!(
        o.status.success() && text(&o).contains("--keep") && text(&o).contains("--keys"),
        "{}",
        text(&o)
    );
}

/// After the state store of a formatted device holds data and a checkpoint, `inspect` loads that
/// checkpoint (verifying it) and lists its regions and keys; a damaged checkpoint makes it exit 2.
#[test]
fn inspect_reports_and_verifies_the_state_checkpoint() {
    use engine::device::{open_store, Backend, OpenOptions};
    use engine::log::{LogConfig, LogStore};
    use engine::state::{Command, Op, RegionState, StateConfig, StateStore};

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = file(dir.path(), "state.img", 16 << 20);
    let o = format_small(&dev, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let opts = OpenOptions {
        backend: Backend::Sync,
        ..OpenOptions::default()
    };
    {
        let h = open_store(Path::new(&dev), &opts).unwrap();
        let (log, _) = LogStore::open(h.log, LogConfig::default()).unwrap();
        let sb = *log.superblock();
        let mut st =
            StateStore::open(h.state_write, h.state_read, &sb, StateConfig::new(&dev)).unwrap();
        st.create_region(RegionState::new(7, (vec![1], vec![]).into()))
            .unwrap();
        let ops = (0..50u32)
            .map(|i| Op::Put {
                key: format!("k{i:03}").into_bytes().into(),
                value: vec![i as u8; 100].into(),
            })
            .collect();
        st.apply(
            7,
            1,
            1,
            &Command {
                client_id: 1,
                sequence: 1,
                ops,
            },
        )
        .unwrap()
        .unwrap();
        st.checkpoint().unwrap();
    }
    let o = basalt(&["inspect", &dev, "--backend", "sync"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("state store: checkpoint 1 in force, 1 regions, 50 keys"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("applied-index"), "{}", text(&o));
    // Damage the checkpoint the root points at: zero the whole state partition (15 segments of
    // 1 MiB after the 1 MiB superblock area; the log has the first quarter, 3 of them).
    let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    f.seek(SeekFrom::Start((1 + 3) << 20)).unwrap();
    f.write_all(&vec![0u8; 12 << 20]).unwrap();
    f.sync_all().unwrap();
    let o = basalt(&["inspect", &dev, "--backend", "sync"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("state store: CORRUPT"), "{}", text(&o));
}
