//! `basalt-ctl`: cluster administration over the client protocol (mutual TLS): `status`,
//! `add-peer`, `remove-peer`, `promote`, `transfer-leader`, `split`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use transport::proto::{AdminOp, PeerChangeOp, Request, Response, StoreStatus};
use transport::{ClientConnection, ClientTlsConfig};

#[derive(Parser)]
#[command(name = "basalt-ctl", version, about = "Administer a Basalt cluster")]
struct Cli {
    /// Node addresses (QUIC), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<SocketAddr>,
    /// Directory with `ca.pem` and the client's `<name>.pem`/`<name>.key` (from `basalt certs`).
    #[arg(long)]
    certs: PathBuf,
    /// The client certificate's name in `--certs`.
    #[arg(long, default_value = "admin")]
    name: String,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stores, regions, leaders and applied indexes; exits 1 unless every store answers and
    /// every region has exactly one leader.
    Status,
    /// Add a peer of REGION on STORE (as a learner with --learner).
    AddPeer {
        #[arg(long)]
        region: u64,
        #[arg(long)]
        store: u64,
        #[arg(long)]
        learner: bool,
    },
    /// Make learner PEER of REGION a voter.
    Promote {
        #[arg(long)]
        region: u64,
        #[arg(long)]
        peer: u64,
    },
    /// Remove PEER from REGION.
    RemovePeer {
        #[arg(long)]
        region: u64,
        #[arg(long)]
        peer: u64,
    },
    /// Hand REGION's leadership to PEER.
    TransferLeader {
        #[arg(long)]
        region: u64,
        #[arg(long)]
        peer: u64,
    },
    /// Split REGION at KEY (UTF-8; the new region takes KEY and above).
    Split {
        #[arg(long)]
        region: u64,
        #[arg(long)]
        key: String,
    },
    /// Several membership changes of REGION at once, through a joint configuration (e.g.
    /// replace a voter: `--add-voter 4 --remove 1048579`).
    ChangePeers {
        #[arg(long)]
        region: u64,
        /// Add a voter on this store (repeatable).
        #[arg(long)]
        add_voter: Vec<u64>,
        /// Add a learner on this store (repeatable).
        #[arg(long)]
        add_learner: Vec<u64>,
        /// Remove this peer (repeatable).
        #[arg(long)]
        remove: Vec<u64>,
    },
}

struct Cluster {
    /// Store id -> (endpoint, status).
    stores: BTreeMap<u64, (SocketAddr, StoreStatus)>,
    down: Vec<(SocketAddr, String)>,
    conns: BTreeMap<SocketAddr, ClientConnection>,
}

async fn gather(cli: &Cli, tls: &ClientTlsConfig) -> Cluster {
    let timeout = Duration::from_secs(cli.timeout_s);
    let mut c = Cluster {
        stores: BTreeMap::new(),
        down: Vec::new(),
        conns: BTreeMap::new(),
    };
    for ep in &cli.endpoints {
        let conn = match tokio::time::timeout(timeout, ClientConnection::connect(*ep, tls)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                c.down.push((*ep, e.to_string()));
                continue;
            }
            Err(_) => {
                c.down.push((*ep, "connect timed out".into()));
                continue;
            }
        };
        match conn.call(0, &Request::Status, timeout).await {
            Ok(Response::Status(s)) => {
                // A node with several stores answers with the first store's id; the regions
                // carry each peer's store.
                let mut by_store: BTreeMap<u64, StoreStatus> = BTreeMap::new();
                for r in s.regions {
                    let store = r
                        .info
                        .peers
                        .iter()
                        .find(|p| p.peer_id == r.peer_id)
                        .map(|p| p.store_id)
                        .unwrap_or(s.store_id);
                    by_store
                        .entry(store)
                        .or_insert_with(|| StoreStatus {
                            store_id: store,
                            regions: Vec::new(),
                        })
                        .regions
                        .push(r);
                }
                by_store.entry(s.store_id).or_insert_with(|| StoreStatus {
                    store_id: s.store_id,
                    regions: Vec::new(),
                });
                for (id, st) in by_store {
                    c.stores.insert(id, (*ep, st));
                }
            }
            Ok(other) => c.down.push((*ep, format!("unexpected answer {other:?}"))),
            Err(e) => c.down.push((*ep, e.to_string())),
        }
        c.conns.insert(*ep, conn);
    }
    c
}

fn print_status(c: &Cluster) -> bool {
    let mut ok = c.down.is_empty();
    println!("stores:");
    for (id, (ep, st)) in &c.stores {
        println!("  store {id} at {ep}: up, {} regions", st.regions.len());
    }
    for (ep, why) in &c.down {
        println!("  {ep}: DOWN ({why})");
    }
    // Region id -> (range, leaders seen, per-store applied index).
    let mut regions: BTreeMap<u64, (String, Vec<u64>, Vec<String>)> = BTreeMap::new();
    for (id, (_, st)) in &c.stores {
        for r in &st.regions {
            let e = regions.entry(r.info.region_id).or_insert_with(|| {
                (
                    format!("[{:?}, {:?})", r.info.start, r.info.end),
                    Vec::new(),
                    Vec::new(),
                )
            });
            if r.is_leader {
                e.1.push(*id);
            }
            e.2.push(format!(
                "store {id}: applied {} commit {} term {}{}",
                r.applied_index,
                r.commit_index,
                r.term,
                if r.hibernating { " (hibernating)" } else { "" }
            ));
        }
    }
    println!("regions:");
    for (id, (range, leaders, peers)) in &regions {
        let leader = match leaders.as_slice() {
            [one] => format!("leader on store {one}"),
            [] => {
                ok = false;
                "NO LEADER".to_string()
            }
            many => {
                ok = false;
                format!("SEVERAL LEADERS {many:?}")
            }
        };
        println!("  region {id} {range}: {leader}");
        for p in peers {
            println!("    {p}");
        }
    }
    println!(
        "summary: {} stores up, {} down, {} regions, {}",
        c.stores.len(),
        c.down.len(),
        regions.len(),
        if ok {
            "every region has one leader"
        } else {
            "NOT HEALTHY"
        }
    );
    ok
}

async fn admin(c: &Cluster, region: u64, op: AdminOp, timeout: Duration) -> anyhow::Result<()> {
    let (store, info) = c
        .stores
        .iter()
        .find_map(|(id, (_, st))| {
            st.regions
                .iter()
                .find(|r| r.info.region_id == region && r.is_leader)
                .map(|r| (*id, r.info.clone()))
        })
        .ok_or_else(|| anyhow!("no leader of region {region} found among the endpoints"))?;
    let ep = c.stores[&store].0;
    let conn = &c.conns[&ep];
    let req = Request::Admin {
        region_id: region,
        epoch: info.epoch,
        op,
    };
    match conn.call(store, &req, timeout).await? {
        Response::AdminDone => Ok(()),
        Response::Error(e) => bail!("refused: {e}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::WARN)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("basalt-ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("basalt-ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let tls = ClientTlsConfig::from_dir(&cli.certs, &cli.name)
        .with_context(|| format!("loading certificates from {}", cli.certs.display()))?;
    let c = gather(&cli, &tls).await;
    let timeout = Duration::from_secs(cli.timeout_s);
    let op = match &cli.command {
        Cmd::Status => {
            return Ok(if print_status(&c) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::AddPeer {
            region,
            store,
            learner,
        } => (
            *region,
            AdminOp::AddPeer {
                store_id: *store,
                learner: *learner,
            },
        ),
        Cmd::Promote { region, peer } => (*region, AdminOp::PromoteLearner { peer_id: *peer }),
        Cmd::RemovePeer { region, peer } => (*region, AdminOp::RemovePeer { peer_id: *peer }),
        Cmd::TransferLeader { region, peer } => {
            (*region, AdminOp::TransferLeader { peer_id: *peer })
        }
        Cmd::Split { region, key } => (
            *region,
            AdminOp::Split {
                split_key: Bytes::from(key.clone().into_bytes()),
            },
        ),
        Cmd::ChangePeers {
            region,
            add_voter,
            add_learner,
            remove,
        } => {
            let changes: Vec<PeerChangeOp> = add_voter
                .iter()
                .map(|&store_id| PeerChangeOp::AddVoter { store_id })
                .chain(
                    add_learner
                        .iter()
                        .map(|&store_id| PeerChangeOp::AddLearner { store_id }),
                )
                .chain(
                    remove
                        .iter()
                        .map(|&peer_id| PeerChangeOp::Remove { peer_id }),
                )
                .collect();
            if changes.is_empty() {
                anyhow::bail!(
                    "change-peers needs at least one --add-voter, --add-learner or --remove"
                );
            }
            (*region, AdminOp::ChangePeers { changes })
        }
    };
    admin(&c, op.0, op.1, timeout).await?;
    println!("done");
    Ok(ExitCode::SUCCESS)
}
