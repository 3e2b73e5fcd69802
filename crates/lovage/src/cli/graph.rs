//! `lovage graph ID`: the state of a task graph that a broker's workers resolve (one sent by
//! `Graph::submit` or computed on `Broker`), read from its stored description and the
//! records of its nodes.

use lovage::flow::graph::StoredGraph;
use lovage::{TaskId, TaskState};

use super::output::{self, GraphNodeState, GraphReport};
use super::{BrokerArgs, Exit};

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The graph's id (`Submitted::graph`).
    id: String,
    /// What to print: `table` (counts by task and state), `json` (those counts and every node
    /// with its state), `dot` (Graphviz's language) or `svg` (a picture laid out here, no
    /// Graphviz needed); in dot and svg each node is coloured by its state, and above 10,000
    /// nodes one box stands for each task name.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// In dot and svg, one box per task name whatever the size: a collection's graph drawn
    /// by operation (`lovage.bag.partial`, `lovage.array.matmul`, …), each box with its node
    /// count and counts by state, collects left out (their inputs joined to their readers).
    #[arg(long)]
    grouped: bool,
    /// The same as `--format json`.
    #[arg(long, conflicts_with_all = ["dot", "format"])]
    json: bool,
    /// The same as `--format dot`.
    #[arg(long, conflicts_with = "format")]
    dot: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// How `lovage graph` prints a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Dot,
    Svg,
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
    let mut states = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let records = results
            .get_many(chunk)
            .map_err(|e| Exit::failed(e.to_string()))?;
        states.extend(records.into_iter().map(|r| r.map(|r| r.state)));
    }
    // A link inside a fused chain has no record of its own when it ran: it shows as its
    // chain's last node does (a chain that failed recorded the failed link and those after).
    let mut tail_of: Vec<Option<usize>> = vec![None; ids.len()];
    for (head, node) in stored.nodes.iter().enumerate() {
        if let Some(&tail) = node.fused.last() {
            for n in std::iter::once(head).chain(node.fused.iter().map(|&n| n as usize)) {
                if let Some(t) = tail_of.get_mut(n) {
                    *t = Some(tail as usize);
                }
            }
        }
    }
    let mut nodes = Vec::with_capacity(ids.len());
    for (index, node) in stored.nodes.iter().enumerate() {
        let state = match (states[index], tail_of[index].and_then(|t| states.get(t))) {
            (Some(own), _) => own.to_string(),
            (None, Some(Some(TaskState::Success | TaskState::Failure))) => {
                TaskState::Success.to_string()
            }
            (None, Some(Some(tail))) => tail.to_string(),
            (None, _) => "PENDING".to_owned(),
        };
        nodes.push(GraphNodeState {
            key: node.key.clone(),
            name: stored.name_of(index as u32).to_owned(),
            id: node.id,
            state,
            next: node.next.iter().map(|&(d, _)| d).collect(),
        });
    }
    let report = GraphReport { id, nodes };
    let format = match (a.json, a.dot) {
        (true, _) => Format::Json,
        (_, true) => Format::Dot,
        _ => a.format,
    };
    match format {
        Format::Table | Format::Json => output::select(format == Format::Json).graph(&report),
        Format::Dot => output::select(false).graph_picture(&report.picture(a.grouped).to_dot()),
        Format::Svg => output::select(false).graph_picture(&report.picture(a.grouped).to_svg()),
    }
    Ok(())
}
