//! `basalt`: the Basalt node daemon and its subcommands: `format` and `inspect` a store's
//! device, `certs` for a cluster CA and its certificates, `start` a node from its TOML config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use engine::device::{open, Backend, OpenOptions};
use engine::format::{format, FormatOptions};
use engine::layout::{BLOCK_SIZE_DEFAULT, MIB, SEGMENT_SIZE_DEFAULT};

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "Basalt node: format and inspect a store's device, issue certificates, run a node"
)]
struct Cli {
    /// Log more (repeat for more detail).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// io_uring, falling back to sync when the kernel refuses it.
    Auto,
    /// io_uring only.
    Uring,
    /// pread/pwrite/fdatasync.
    Sync,
}

#[derive(Subcommand)]
enum Command {
    /// Format DEVICE (a block device or a regular file) as a new Basalt store.
    Format {
        /// The block device or file.
        device: PathBuf,
        /// Store id (random when omitted; printed).
        #[arg(long)]
        store_id: Option<u64>,
        /// Cluster id, 1 to 32 hex digits (random when omitted; printed).
        #[arg(long, value_parser = parse_cluster_id)]
        cluster_id: Option<u128>,
        /// Overwrite a device holding a filesystem, partition table or another Basalt store.
        #[arg(long)]
        force: bool,
        /// Store block size in bytes (a power of two, a multiple of the device's logical block).
        #[arg(long, default_value_t = BLOCK_SIZE_DEFAULT)]
        block_size: u32,
        /// Segment size in MiB.
        #[arg(long, default_value_t = SEGMENT_SIZE_DEFAULT / MIB)]
        segment_size_mib: u64,
        /// Regular file only: create or extend it to this many MiB first.
        #[arg(long)]
        create_size_mib: Option<u64>,
        /// I/O backend.
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
    },
    /// Print the superblocks, the segment table and the log's extent of DEVICE, verifying every
    /// checksum. Exits with status 2 when any checksum fails.
    Inspect {
        /// The block device or file.
        device: PathBuf,
        /// I/O backend.
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
    },
    /// Generate a cluster CA (or reuse the one in DIR) and certificates for nodes and clients.
    Certs {
        /// Directory for `ca.pem`/`ca.key` and `<name>.pem`/`<name>.key`.
        #[arg(long)]
        dir: PathBuf,
        /// A node certificate: `name` or `name=SAN,SAN,...` (DNS names or IP addresses;
        /// default `localhost,127.0.0.1`). Repeat for each node.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A client certificate name. Repeat for each client.
        #[arg(long = "client")]
        clients: Vec<String>,
    },
    /// Run a node as its config file describes, until SIGTERM or SIGINT (then stop cleanly:
    /// every store writes a final checkpoint).
    Start {
        /// The node's TOML config (see deploy/basalt.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a throwaway 3-node cluster on 127.0.0.1: write and read through the client, kill
    /// the leader with SIGKILL, show the new leader take over with nothing lost, clean up.
    Demo {
        /// Keys written and read back.
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Size of each value in bytes.
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
        /// Leave the cluster running at the end (and print how to use and stop it).
        #[arg(long)]
        keep: bool,
        /// Use this directory (empty or absent; left in place) instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Size of each node's store file in MiB (written with zeros when created, so that
        /// later writes are overwrites as on a raw disk: about 0.4 s each for the default; a
        /// store needs 5 segments of 64 MiB, about 330 MiB, at the least).
        #[arg(long, default_value_t = 512)]
        store_size_mib: u64,
    },
}

fn parse_cluster_id(s: &str) -> Result<u128, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.is_empty() || hex.len() > 32 {
        return Err(format!("`{s}` is not 1 to 32 hex digits"));
    }
    u128::from_str_radix(hex, 16).map_err(|e| format!("`{s}` is not hex: {e}"))
}

fn backend(b: BackendArg) -> Backend {
    match b {
        BackendArg::Auto => Backend::Auto,
        BackendArg::Uring => Backend::Uring,
        BackendArg::Sync => Backend::Sync,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .init();
    let command = cli.command.unwrap_or(Command::Demo {
        keys: 1000,
        value_bytes: 256,
        keep: false,
        dir: None,
        store_size_mib: 512,
    });
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("basalt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo {
            keys,
            value_bytes,
            keep,
            dir,
            store_size_mib,
        } => {
            let opts = tools::demo::DemoOptions {
                keys,
                value_bytes,
                keep,
                dir,
                device_bytes: store_size_mib
                    .checked_mul(MIB)
                    .with_context(|| format!("--store-size-mib {store_size_mib} is too large"))?,
            };
            tools::demo::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            dir,
            nodes,
            clients,
        } => {
            let specs: Vec<transport::certs::NodeCertSpec> = nodes
                .iter()
                .map(|n| match n.split_once('=') {
                    Some((name, sans)) => transport::certs::NodeCertSpec {
                        name: name.to_string(),
                        sans: sans.split(',').map(str::to_string).collect(),
                    },
                    None => transport::certs::NodeCertSpec {
                        name: n.clone(),
                        sans: vec!["localhost".into(), "127.0.0.1".into()],
                    },
                })
                .collect();
            transport::certs::write_cert_dir(&dir, "basalt-cluster-ca", &specs, &clients)
                .with_context(|| format!("writing certificates to {}", dir.display()))?;
            println!("certificates in {}:", dir.display());
            println!("  ca.pem, ca.key");
            for n in specs.iter().map(|s| &s.name).chain(clients.iter()) {
                println!("  {n}.pem, {n}.key");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { config } => {
            let cfg = tools::node::load_config(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let signal =
                tools::signals::ShutdownSignal::install().context("installing signal handlers")?;
            let node = tools::node::Node::start(&cfg).context("starting the node")?;
            println!(
                "basalt node {} listening on {} with stores {:?}{}",
                node.node_id(),
                node.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                node.store_ids(),
                node.metrics_addr()
                    .map(|a| format!(", metrics on http://{a}/metrics"))
                    .unwrap_or_default()
            );
            let sig = signal.wait();
            tracing::info!(signal = sig, "stopping");
            node.stop().context("stopping the node")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Format {
            device,
            store_id,
            cluster_id,
            force,
            block_size,
            segment_size_mib,
            create_size_mib,
            backend: b,
        } => {
            let opts = OpenOptions {
                backend: backend(b),
                create_size_bytes: create_size_mib.map(|m| m * MIB),
                ..OpenOptions::default()
            };
            let (mut io, _) = open(&device, &opts)?;
            let label = device.display().to_string();
            let segment_size_bytes = segment_size_mib
                .checked_mul(MIB)
                .with_context(|| format!("--segment-size-mib {segment_size_mib} is too large"))?;
            let f = FormatOptions {
                store_id,
                cluster_id,
                force,
                block_size,
                segment_size_bytes,
                ..FormatOptions::new(label.clone())
            };
            let sb = format(io.as_mut(), &f)?;
            println!("formatted {label} ({} backend)", io.backend_name());
            println!("store id:     {}", sb.store_id);
            println!("cluster id:   {:032x}", sb.cluster_id);
            println!("block size:   {}", sb.block_size);
            println!(
                "segment size: {} MiB x {} segments",
                sb.segment_size_bytes / MIB,
                sb.segment_count
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { device, backend: b } => {
            let opts = OpenOptions {
                backend: backend(b),
                ..OpenOptions::default()
            };
            let handles = engine::device::open_store(&device, &opts)?;
            let label = device.display().to_string();
            let report = engine::inspect::inspect(handles.log, &label)?;
            print!("{report}");
            if report.corrupt() {
                return Ok(ExitCode::from(2));
            }
            let sb = report
                .superblocks
                .get(report.superblock_in_use)
                .and_then(|c| c.as_ref().ok())
                .copied()
                .context("no valid superblock")?;
            match engine::inspect::inspect_state(
                handles.state_write,
                handles.state_read,
                &sb,
                &label,
            ) {
                Ok(state) => {
                    print!("{state}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("state store: CORRUPT: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
