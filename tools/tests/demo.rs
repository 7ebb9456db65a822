//! `basalt demo --keys 50` runs to completion as a user would run it: the built binary starts
//! three `basalt start` children, writes and reads, kills the leader, and must report the new
//! leader and nothing lost, exit 0, and leave no child process and no directory behind (the
//! pids and the directory are taken from its own output).

use std::path::PathBuf;
use std::process::Command;

const BASALT: &str = env!("CARGO_BIN_EXE_basalt");

/// The pids the demo printed (`pid N`).
fn pids(out: &str) -> Vec<i32> {
    out.split("pid ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Whether `pid` is a live `basalt` process (not a reused pid of something else).
fn basalt_running(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("basalt"))
        .unwrap_or(false)
}

#[test]
fn demo_runs_kills_the_leader_and_cleans_up() {
    let out = Command::new(BASALT)
        .args(["demo", "--keys", "50"])
        .env("TMPDIR", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run basalt demo");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "demo failed: {}", out.status);

    for step in [
        "region 1 elected node",
        "put 50 keys (256 B values)",
        "got 50 keys back",
        "killed the leader, node",
        "is the new leader",
        "acknowledged writes: 0 lost",
        "caught up to applied index",
        "stopped the 3 nodes (SIGTERM, clean exits)",
        "basalt demo: done",
    ] {
        assert!(stdout.contains(step), "output lacks `{step}`");
    }

    let dir: PathBuf = stdout
        .lines()
        .find_map(|l| l.split(", in ").nth(1))
        .expect("the demo names its directory")
        .trim()
        .into();
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let pids = pids(&stdout);
    assert!(pids.len() >= 4, "three nodes and a restart: {pids:?}");
    for pid in pids {
        assert!(!basalt_running(pid), "node pid {pid} still running");
    }
}
