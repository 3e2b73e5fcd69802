//! `lovage graph ID`: the state of a task graph that a broker's workers resolve (one sent by
//! `Graph::submit` or computed on `Broker`), read from its stored description and the
//! records of its nodes.

use lovage::flow::graph::StoredGraph;
use lovage::TaskId;

use super::output::{self, GraphNodeState, GraphReport};
use super::{BrokerArgs, Exit};

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The graph's id (`Submitted::graph`).
    id: String,
    /// Print JSON: counts by task and state, and every node with its state.
    #[arg(long, conflicts_with = "dot")]
    json: bool,
    /// Print the graph in Graphviz's DOT, each node coloured by its state (grouped by task
    /// name above 10,000 nodes).
    #[arg(long)]
    dot: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn run(a: GraphArgs) -> Result<(), Exit> {
    let id: TaskId = a.id.parse().map_err(|e| Exit::usage(format!("{e}")))?;
    let app = a.broker.app()?;
    let results = app.backend().results();
    let bytes = results
        .get_blob(id)
        .map_err(|e| Exit::failed(e.to_string()))?
        .ok_or_else(|| {
            Exit::failed(format!(
                "no task graph {id} in {} (unknown, or expired)",
                app.backend().url()
            ))
        })?;
    let stored = StoredGraph::decode(&bytes)
        .map_err(|e| Exit::failed(format!("{id} is not a stored task graph: {e}")))?;
    let ids: Vec<TaskId> = stored.nodes.iter().map(|n| n.id).collect();
    let mut nodes = Vec::with_capacity(ids.len());
    for (chunk_start, chunk) in ids.chunks(1000).enumerate() {
        let records = results
            .get_many(chunk)
            .map_err(|e| Exit::failed(e.to_string()))?;
        for (i, rec) in records.into_iter().enumerate() {
            let index = chunk_start * 1000 + i;
            let node = &stored.nodes[index];
            nodes.push(GraphNodeState {
                key: node.key.clone(),
                name: stored.name_of(index as u32).to_owned(),
                id: node.id,
                state: rec.map_or_else(|| "PENDING".to_owned(), |r| r.state.to_string()),
                next: node.next.iter().map(|&(d, _)| d).collect(),
            });
        }
    }
    let report = GraphReport { id, nodes };
    if a.dot {
        output::select(false).graph_dot(&report.dot());
    } else {
        output::select(a.json).graph(&report);
    }
    Ok(())
}
