//! Self-healing commands: the repairer role, deep scrub requests, and node
//! drain and removal.

use std::time::Duration;

use anyhow::{Result, bail};
use tessera_scrub::{RepairConfig, Repairer};
use tessera_sdk::{Client, ClusterConfig};
use tessera_types::NodeId;
use tracing::warn;

use crate::args::{ClusterArg, NodeCommand, RepairArgs, ScrubCommand};
use crate::servers::{connect, load_cluster};

fn repair_config(args: &RepairArgs) -> RepairConfig {
    RepairConfig {
        rate: args.repair_rate,
        parallel: args.repair_parallel.max(1),
        ..RepairConfig::default()
    }
}

/// The repairer as a task of another role (meta runs one): it connects to
/// meta like any client, retrying until meta answers.
pub fn spawn_repairer(cfg: ClusterConfig, args: RepairArgs) -> tokio::task::JoinHandle<()> {
    tokio::spawn(repair_forever(cfg, args))
}

/// Connects (retrying every second until meta answers) and repairs until
/// dropped.
pub async fn repair_forever(cfg: ClusterConfig, args: RepairArgs) {
    let client = loop {
        match Client::connect(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                warn!(error = %e, "repairer cannot reach meta yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    Repairer::new(client, repair_config(&args)).run().await;
}

pub async fn run_repairer(cluster: &ClusterArg, args: &RepairArgs) -> Result<()> {
    let cfg = load_cluster(&cluster.cluster)?;
    let task = spawn_repairer(cfg, args.clone());
    crate::servers::wait_for_signal().await?;
    task.abort();
    Ok(())
}

pub async fn scrub(command: ScrubCommand) -> Result<()> {
    let ScrubCommand::Now { wait, cluster } = command;
    let client = connect(&cluster).await?;
    let seq = client.start_scrub().await?;
    if !wait {
        println!("scrub {seq} requested: every node re-reads and re-hashes what it holds");
        return Ok(());
    }
    // Done when every node that is up has finished this request; nodes that
    // are down scrub when they return.
    loop {
        let s = client.status().await?;
        let up: Vec<_> = s
            .map
            .nodes
            .iter()
            .filter(|n| n.state == tessera_proto::NodeState::Up)
            .collect();
        if up
            .iter()
            .all(|n| n.scrub.seq_done >= seq && !n.scrub.running)
        {
            let checked: u64 = up.iter().map(|n| n.scrub.checked).sum();
            let found: u64 = up.iter().map(|n| n.scrub.found).sum();
            println!("scrub {seq} done: {checked} fragments checked, {found} problems found");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn parse_node(id: &str) -> Result<NodeId> {
    id.parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a node id (see tessera status)"))
}

pub async fn node(command: NodeCommand, cluster: &ClusterArg) -> Result<()> {
    let client = connect(cluster).await?;
    match command {
        NodeCommand::Drain { id, wait } => {
            let node = parse_node(&id)?;
            client.drain_node(node).await?;
            println!(
                "node {node} is draining: it takes no new fragments and the repairer moves its fragments away"
            );
            if wait {
                loop {
                    let s = client.status().await?;
                    let Some(n) = s.map.nodes.iter().find(|n| n.id == node) else {
                        bail!("node {node} left the cluster map");
                    };
                    if n.fragments == 0 {
                        println!(
                            "node {node} holds nothing: remove it with tessera node rm {node}"
                        );
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        NodeCommand::Rm { id } => {
            let node = parse_node(&id)?;
            client.remove_node(node).await?;
            println!("node {node} removed from the cluster");
        }
    }
    Ok(())
}
