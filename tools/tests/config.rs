//! The node config as an operator writes it: the shipped `deploy/basalt.example.toml` loads with
//! the documented values, omitted keys take their defaults, relative paths resolve against the
//! file's directory, and a table of bad files (duplicate ids, zero tick, election <= heartbeat,
//! unknown keys, stores missing from the cluster, bad sizes...) is refused naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tools::config::{Config, ConfigError, ReadMode};

const MINIMAL: &str = r#"
node-id = 2

[[stores]]
store-id = 20
device = "data/s20.img"

[tls]
ca-cert = "ca.pem"
node-cert = "n2.pem"
node-key = "/abs/n2.key"

[cluster]
initial-cluster = [
  { store-id = 10, addr = "10.0.0.1:20160" },
  { store-id = 20, node-id = 2, addr = "10.0.0.2:20160" },
]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/etc/basalt"))
}

#[test]
fn example_file_loads_with_documented_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/basalt.example.toml");
    let c = Config::load(&path).expect("example parses");
    let dir = path.parent().expect("dir");
    assert_eq!(c.node_id, 1);
    assert_eq!(
        c.listen_addr,
        "127.0.0.1:20160".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.metrics_addr, Some("127.0.0.1:20180".parse().unwrap()));
    assert_eq!(c.stores.len(), 1);
    assert_eq!(c.stores[0].store_id, 1);
    assert_eq!(
        c.stores[0].device,
        PathBuf::from("/var/lib/basalt/store1.img")
    );
    assert_eq!(c.stores[0].create_size_bytes, Some(4 << 30));
    assert_eq!(c.stores[0].backend, engine::device::Backend::Auto);
    assert_eq!(c.tls.ca_cert, dir.join("certs/ca.pem"));
    assert_eq!(c.cluster.initial_cluster.len(), 3);
    assert_eq!(c.cluster.initial_cluster[2].node_id, Some(3));
    assert_eq!(c.cluster.initial_regions, 1);
    // The example spells out every default: it must equal the defaults.
    assert_eq!(c.raft, Default::default());
    assert_eq!(c.limits, Default::default());
}

#[test]
fn omitted_keys_take_defaults_and_paths_resolve() {
    let c = parse(MINIMAL).expect("minimal parses");
    assert_eq!(
        c.listen_addr,
        "127.0.0.1:20160".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.metrics_addr, Some("127.0.0.1:20180".parse().unwrap()));
    assert_eq!(
        c.stores[0].device,
        PathBuf::from("/etc/basalt/data/s20.img")
    );
    assert_eq!(c.stores[0].create_size_bytes, None);
    assert_eq!(c.tls.node_cert, PathBuf::from("/etc/basalt/n2.pem"));
    assert_eq!(c.tls.node_key, PathBuf::from("/abs/n2.key"));
    assert_eq!(c.raft.tick_interval, Duration::from_millis(100));
    assert_eq!((c.raft.election_ticks, c.raft.heartbeat_ticks), (10, 2));
    assert_eq!(c.raft.read_mode, ReadMode::ReadIndex);
    assert!(c.raft.hibernate);
    assert_eq!(c.limits.frame_bytes_max, 16 << 20);
    assert_eq!(c.limits.snapshot_chunk_bytes, 1 << 20);
    assert_eq!(c.cluster.initial_split_keys(), Vec::<Vec<u8>>::new());
}

#[test]
fn set_values_are_read() {
    let text = MINIMAL.replace("node-id = 2\n", "node-id = 2\nmetrics-addr = \"off\"\n")
        + "[raft]\ntick-interval = \"250ms\"\nelection-ticks = 8\nread-mode = \"lease\"\n\
           hibernate = false\n[limits]\nframe-bytes-max = 1048576\nsnapshot-chunk-bytes = \"64 KiB\"\n";
    let c = parse(&text).expect("parses");
    assert_eq!(c.metrics_addr, None);
    assert_eq!(c.raft.tick_interval, Duration::from_millis(250));
    assert_eq!(c.raft.election_ticks, 8);
    assert_eq!(c.raft.read_mode, ReadMode::Lease);
    assert!(!c.raft.hibernate);
    assert_eq!(c.limits.frame_bytes_max, 1 << 20);
    assert_eq!(c.limits.snapshot_chunk_bytes, 64 << 10);
}

#[test]
fn initial_regions_split_at_even_one_byte_keys() {
    let with = |n: u32| {
        let text = MINIMAL.replace(
            "[cluster]\n",
            &format!("[cluster]\ninitial-regions = {n}\n"),
        );
        parse(&text).expect("parses").cluster.initial_split_keys()
    };
    assert_eq!(with(4), vec![vec![0x40], vec![0x80], vec![0xc0]]);
    assert_eq!(with(3), vec![vec![85], vec![170]]);
    let all = with(256);
    assert_eq!(all.len(), 255);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(all[0], vec![1]);
}

#[test]
fn load_resolves_relative_to_the_file_and_reports_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, MINIMAL).expect("write");
    let c = Config::load(&path).expect("loads");
    assert_eq!(c.tls.ca_cert, dir.path().join("ca.pem"));
    let err = Config::load(&dir.path().join("absent.toml")).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

/// (what, edit of MINIMAL: (from, to), the key the error must name)
const BAD: &[(&str, (&str, &str), &str)] = &[
    ("zero node id", ("node-id = 2", "node-id = 0"), "node-id"),
    (
        "unknown top key",
        ("node-id = 2", "node-id = 2\nnode-name = \"x\""),
        "node-name",
    ),
    (
        "unknown raft key",
        ("[cluster]", "[raft]\nticks = 3\n[cluster]"),
        "raft.ticks",
    ),
    (
        "unknown store key",
        ("device =", "size = 1\ndevice ="),
        "stores.size",
    ),
    (
        "wrong type",
        ("node-id = 2", "node-id = \"two\""),
        "node-id",
    ),
    (
        "duplicate store id",
        ("[tls]", "[[stores]]\nstore-id = 20\ndevice = \"b\"\n[tls]"),
        "stores[1].store-id",
    ),
    (
        "device twice",
        (
            "[tls]",
            "[[stores]]\nstore-id = 30\ndevice = \"data/s20.img\"\n[tls]",
        ),
        "stores[1].device",
    ),
    (
        "store missing from initial-cluster",
        ("[tls]", "[[stores]]\nstore-id = 30\ndevice = \"b\"\n[tls]"),
        "stores[1].store-id",
    ),
    (
        "local store under another node",
        ("node-id = 2, addr", "node-id = 1, addr"),
        "cluster.initial-cluster[1].node-id",
    ),
    (
        "local stores at two addresses",
        ("[tls]", "[[stores]]\nstore-id = 10\ndevice = \"b\"\n[tls]"),
        "cluster.initial-cluster[0].addr",
    ),
    (
        "this node's member not local",
        ("store-id = 10, addr", "store-id = 10, node-id = 2, addr"),
        "cluster.initial-cluster[0].store-id",
    ),
    (
        "another member at this node's address",
        ("10.0.0.1:20160", "10.0.0.2:20160"),
        "cluster.initial-cluster[0].store-id",
    ),
    (
        "duplicate cluster store",
        ("store-id = 10,", "store-id = 20,"),
        "cluster.initial-cluster[1].store-id",
    ),
    (
        "bad addr",
        ("10.0.0.1:20160", "node-a:20160"),
        "cluster.initial-cluster[0].addr",
    ),
    (
        "bad listen addr",
        ("node-id = 2", "node-id = 2\nlisten-addr = \"x\""),
        "listen-addr",
    ),
    (
        "zero tick",
        ("[cluster]", "[raft]\ntick-interval = \"0s\"\n[cluster]"),
        "raft.tick-interval",
    ),
    (
        "bad tick",
        ("[cluster]", "[raft]\ntick-interval = \"fast\"\n[cluster]"),
        "raft.tick-interval",
    ),
    (
        "election <= heartbeat",
        ("[cluster]", "[raft]\nelection-ticks = 2\n[cluster]"),
        "raft.election-ticks",
    ),
    (
        "zero heartbeat",
        ("[cluster]", "[raft]\nheartbeat-ticks = 0\n[cluster]"),
        "raft.heartbeat-ticks",
    ),
    (
        "bad read mode",
        ("[cluster]", "[raft]\nread-mode = \"stale\"\n[cluster]"),
        "raft.read-mode",
    ),
    (
        "bad backend",
        ("device =", "backend = \"aio\"\ndevice ="),
        "stores.backend",
    ),
    (
        "size unit",
        ("device =", "create-size = \"4GB\"\ndevice ="),
        "stores[0].create-size",
    ),
    (
        "zero size",
        ("device =", "create-size = 0\ndevice ="),
        "stores[0].create-size",
    ),
    (
        "no regions",
        ("[cluster]", "[cluster]\ninitial-regions = 0"),
        "cluster.initial-regions",
    ),
    (
        "257 regions",
        ("[cluster]", "[cluster]\ninitial-regions = 257"),
        "cluster.initial-regions",
    ),
    (
        "chunk larger than frame",
        (
            "[cluster]",
            "[limits]\nsnapshot-chunk-bytes = \"16MiB\"\n[cluster]",
        ),
        "limits.snapshot-chunk-bytes",
    ),
    (
        "tiny frame",
        (
            "[cluster]",
            "[limits]\nframe-bytes-max = \"1KiB\"\n[cluster]",
        ),
        "limits.frame-bytes-max",
    ),
    (
        "zero queue",
        ("[cluster]", "[limits]\nrequest-queue-max = 0\n[cluster]"),
        "limits.request-queue-max",
    ),
];

#[test]
fn bad_values_are_refused_naming_the_key() {
    for (what, (from, to), key) in BAD {
        assert!(MINIMAL.contains(from), "{what}: edit does not apply");
        let text = MINIMAL.replacen(from, to, 1);
        let err = parse(&text).expect_err(what);
        eprintln!("{what}: {err}");
        assert_eq!(err.key(), Some(*key), "{what}: {err}");
        assert!(
            err.to_string().contains(key),
            "{what}: message lacks key: {err}"
        );
    }
}

#[test]
fn missing_sections_are_refused() {
    let no_tls = MINIMAL.replace("[tls]", "[tls-old]");
    let err = parse(&no_tls).expect_err("no tls");
    assert!(err.to_string().contains("tls"), "{err}");
    let no_stores = MINIMAL.replace("[[stores]]", "[[old]]");
    assert!(parse(&no_stores).is_err());
}
