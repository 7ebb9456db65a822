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

#[test]
fn format_then_inspect_then_refuse_reformat() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = file(dir.path(), "store.img", 16 << 20);
    let o = basalt(&[
        "format",
        &dev,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("store id:") && text(&o).contains("cluster id:"),
        "{}",
        text(&o)
    );

    let o = basalt(&["inspect", &dev, "--backend", "sync"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("superblock copy 1 (in use): ok") && text(&o).contains("all verified"),
        "{}",
        text(&o)
    );

    let o = basalt(&[
        "format",
        &dev,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("already holds Basalt store"),
        "{}",
        text(&o)
    );
    let o = basalt(&[
        "format",
        &dev,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
        "--force",
        "--store-id",
        "42",
        "--cluster-id",
        "abc",
    ]);
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
    let o = basalt(&[
        "format",
        &dev,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("ext2/3/4") && text(&o).contains(&dev),
        "{}",
        text(&o)
    );
    let o = basalt(&[
        "format",
        &dev,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
        "--force",
    ]);
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
    let o = basalt(&[
        "format",
        &small,
        "--segment-size-mib",
        "1",
        "--backend",
        "sync",
    ]);
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

#[test]
fn demo_says_it_is_not_built_yet() {
    let o = basalt(&["demo"]);
    assert!(
        o.status.success() && text(&o).contains("not built yet"),
        "{}",
        text(&o)
    );
}
