//! Replacing a node for good: the cluster file grows, the shard groups follow.
//!
//! An operator adds a node that replaces a dead one (`occam cluster add-node --replaces N`,
//! which appends it to the cluster file with `replaces = N`) and starts it. Then:
//!
//! 1. Every running node reads its cluster file once a second ([`watch_cluster_file`]). A file
//!    that only appends nodes is taken in: their certificates are pinned (so their connections
//!    are accepted), links and Raft connections to them are set up, and the file's placement
//!    now puts the new node where the replaced one was. Any other change is refused, with a
//!    log line, and the node keeps the file it has.
//! 2. The new node starts its replicas empty (genesis) and uninitialized: it does not start
//!    groups, it waits to be added.
//! 3. Each shard's leader compares its group's voters with the placement once a second
//!    ([`keep_placement`]). When they differ, it adds the missing nodes as learners and waits
//!    until they have caught up (from a snapshot if the log was purged), then changes the
//!    voters to the placement in one membership change (openraft's joint consensus). The
//!    replaced node is removed from the group: its RPCs are refused from then on.
//!
//! The validator set follows the membership: each membership entry starts an epoch (its log
//! index) whose members are the entry's voters, so the blocks applied after it are certified by
//! them (see `group`). A learner does not vote.

use super::{NodeId, Shared};
use crate::config::ClusterConfig;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How often a node reads its cluster file, and a leader compares its group with the placement.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a leader waits for a new learner to catch up before it tries again later.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Entries a learner may lag behind the leader's log and still be made a voter.
const CATCH_UP_LAG: u64 = 16;

/// Reads `path` every [`CHECK_EVERY`] and takes in nodes appended to it, until the node stops.
pub(super) async fn watch_cluster_file(shared: Arc<Shared>, path: PathBuf) {
    let read = |path: PathBuf| async move { tokio::task::spawn_blocking(move || std::fs::read(path).ok()).await.ok().flatten() };
    // Compared with the roster on the first read, so a file grown while the node was starting
    // is taken in too.
    let mut last = None;
    while !shared.stopping.load(Ordering::Relaxed) {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(bytes) = read(path.clone()).await else { continue };
        if last.as_ref() == Some(&bytes) {
            continue;
        }
        last = Some(bytes);
        let newer = match ClusterConfig::load(&path) {
            Ok(c) => c,
            Err(e) => {
                warn!("the cluster file changed but does not load; keeping the one in use: {e}");
                continue;
            }
        };
        if let Err(e) = take_in(&shared, newer) {
            warn!("the cluster file changed; keeping the one in use: {e}");
        }
    }
}

/// Takes in a cluster file that appends nodes to the one in use.
fn take_in(shared: &Shared, newer: ClusterConfig) -> Result<(), String> {
    let current = shared.roster();
    if *current == newer {
        return Ok(());
    }
    current.check_extension(&newer).map_err(|e| e.to_string())?;
    if newer.is_replaced(shared.node) {
        // Its groups stop, so a leader here steps aside for the others (and the new node,
        // whose placement leaves this one out, is not left waiting for its log).
        error!(node = shared.node, by = newer.current(shared.node), "this node was replaced for good; its replicas stop (stop the node)");
        for (shard, g) in &shared.groups {
            let (raft, shard) = (g.raft.clone(), *shard);
            shared.dialer.runtime.spawn(async move {
                if let Err(e) = raft.shutdown().await {
                    warn!(shard, "stopping the replaced node's group: {e}");
                }
            });
        }
    }
    shared.dialer.dial_new(shared.node, &newer, &shared.links).map_err(|e| e.to_string())?;
    let added: Vec<u32> = newer.nodes[current.nodes.len()..].iter().map(|n| n.id).collect();
    *shared.roster.write() = Arc::new(newer);
    info!(?added, "the cluster file lists new nodes; pinned and linked");
    Ok(())
}

/// While this node leads `shard`'s group, moves the group's voters to the cluster file's
/// placement, until the node stops.
pub(super) async fn keep_placement(shared: Arc<Shared>, shard: u32) {
    let Some(group) = shared.groups.get(&shard).cloned() else { return };
    while !shared.stopping.load(Ordering::Relaxed) {
        tokio::time::sleep(CHECK_EVERY).await;
        // Only a leader that has applied an entry of its term: it knows the group's membership.
        if group.caught_up_term(shared.node).is_none() {
            continue;
        }
        let roster = shared.roster();
        let target: BTreeSet<NodeId> = (0..roster.replicas as u32).map(|r| NodeId::from(roster.node_of(shard, r))).collect();
        let metrics = group.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters == target && membership.get_joint_config().len() == 1 {
            // Learners the placement no longer wants (a new node replaced before it joined).
            let strays: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).filter(|id| !target.contains(id)).collect();
            if !strays.is_empty() {
                match group.raft.change_membership(openraft::ChangeMembers::RemoveNodes(strays.clone()), false).await {
                    Ok(_) => info!(shard, ?strays, "learners outside the placement removed from the group"),
                    Err(e) => warn!(shard, "removing learners: {e}"),
                }
            }
            continue;
        }
        for &n in target.difference(&voters) {
            if membership.get_node(&n).is_some() {
                continue;
            }
            info!(shard, node = n, "adding a node to the shard's group as a learner");
            match tokio::time::timeout(CATCH_UP_TIMEOUT, group.raft.add_learner(n, openraft::EmptyNode {}, true)).await {
                Ok(Ok(_)) => info!(shard, node = n, "the learner is added; it becomes a voter once it has caught up"),
                Ok(Err(e)) => warn!(shard, node = n, "adding the learner: {e}"),
                Err(_) => warn!(shard, node = n, "the learner did not catch up within {CATCH_UP_TIMEOUT:?}; trying again later"),
            }
        }
        // Every new voter must be a learner that has caught up.
        let metrics = group.raft.metrics().borrow().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let behind: Vec<NodeId> = target
            .difference(&voters)
            .copied()
            .filter(|n| {
                let matched = metrics.replication.as_ref().and_then(|r| r.get(n).copied().flatten());
                matched.is_none_or(|l| l.index + CATCH_UP_LAG < last)
            })
            .collect();
        if !behind.is_empty() {
            continue;
        }
        match group.raft.change_membership(target.clone(), false).await {
            Ok(_) => info!(shard, from = ?voters, to = ?target, "the shard's group changed its voters"),
            Err(e) => warn!(shard, "changing the group's voters: {e}"),
        }
    }
}
