//! Pictures of a graph: DOT text for Graphviz, and SVG drawn here with a layered layout (no
//! Graphviz needed). Above [`GROUP_ABOVE`] nodes both draw one box per task name instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::graph::{Graph, Inner, NodeKind};

/// Graphs with more nodes than this are drawn grouped by task name.
pub const GROUP_ABOVE: usize = 10_000;

/// What is drawn: boxes with a label, a layer and a kind, and counted edges between them.
struct Drawing {
    ids: Vec<String>,
    labels: Vec<String>,
    kinds: Vec<NodeKind>,
    layers: Vec<u32>,
    /// (from, to, how many edges of the graph this stands for)
    edges: Vec<(usize, usize, usize)>,
}

/// The last `::` segment of a task name.
fn short(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

/// Each node's layer: one below its deepest dependency. A node only depends on nodes added
/// before it, so one pass in index order suffices.
fn layers(g: &Inner) -> Vec<u32> {
    let mut layer = vec![0u32; g.len()];
    for n in 0..g.len() {
        let l = g
            .deps_of(n as u32)
            .iter()
            .map(|&d| layer[d as usize] + 1)
            .max()
            .unwrap_or(0);
        layer[n] = l;
    }
    layer
}

fn drawing(g: &Inner) -> Drawing {
    let layer = layers(g);
    if g.len() <= GROUP_ABOVE {
        let mut edges = Vec::with_capacity(g.deps.len());
        for n in 0..g.len() {
            for &d in g.deps_of(n as u32) {
                edges.push((d as usize, n, 1));
            }
        }
        return Drawing {
            ids: (0..g.len()).map(|n| g.key(n as u32)).collect(),
            labels: g.ops.iter().map(|op| short(op.name()).to_owned()).collect(),
            kinds: g.ops.iter().map(|op| op.kind()).collect(),
            layers: layer,
            edges,
        };
    }
    // Grouped: one box per task name at the shallowest layer of its nodes.
    let mut group_of_name: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &g.ops {
        let next = group_of_name.len();
        group_of_name.entry(op.name()).or_insert(next);
    }
    let groups = group_of_name.len();
    let mut names = vec![""; groups];
    for (name, &i) in &group_of_name {
        names[i] = name;
    }
    let mut count = vec![0usize; groups];
    let mut kinds = vec![NodeKind::Structural; groups];
    let mut glayer = vec![u32::MAX; groups];
    let mut member: Vec<u32> = Vec::with_capacity(g.len());
    for (n, op) in g.ops.iter().enumerate() {
        let i = group_of_name[op.name()];
        count[i] += 1;
        kinds[i] = op.kind();
        glayer[i] = glayer[i].min(layer[n]);
        member.push(i as u32);
    }
    let mut edge_count: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for n in 0..g.len() {
        for &d in g.deps_of(n as u32) {
            *edge_count
                .entry((member[d as usize] as usize, member[n] as usize))
                .or_default() += 1;
        }
    }
    Drawing {
        ids: names.iter().map(|n| n.to_string()).collect(),
        labels: (0..groups)
            .map(|i| format!("{} ×{}", short(names[i]), count[i]))
            .collect(),
        kinds,
        layers: glayer,
        edges: edge_count
            .into_iter()
            .map(|((a, b), c)| (a, b, c))
            .collect(),
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Task => "#cfe2ff",
        NodeKind::Local => "#ffe8b3",
        NodeKind::Structural => "#e6e6e6",
    }
}

impl Graph {
    /// The graph in Graphviz's DOT language: one box per node, named by its key and labelled
    /// by its task's short name; an edge from each dependency to its dependent. Above 10,000
    /// nodes, one box per task name with its count, edges labelled with theirs.
    pub fn to_dot(&self) -> String {
        let d = drawing(&self.inner());
        let mut out = String::from("digraph lovage {\n  rankdir=TB;\n  node [shape=box, style=filled, fontname=\"monospace\"];\n");
        for i in 0..d.ids.len() {
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\", fillcolor=\"{}\"];",
                dot_escape(&d.ids[i]),
                dot_escape(&d.labels[i]),
                colour(d.kinds[i])
            );
        }
        for &(a, b, c) in &d.edges {
            let label = if c > 1 {
                format!(" [label=\"{c}\"]")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{label};",
                dot_escape(&d.ids[a]),
                dot_escape(&d.ids[b])
            );
        }
        out.push_str("}\n");
        out
    }

    /// The graph as an SVG picture, laid out here in layers (a node one layer below its
    /// deepest dependency, in order of addition within a layer). Above 10,000 nodes, grouped
    /// by task name as [`to_dot`](Graph::to_dot) is.
    pub fn to_svg(&self) -> String {
        const W: usize = 140;
        const H: usize = 28;
        const GAP_X: usize = 20;
        const GAP_Y: usize = 40;
        let d = drawing(&self.inner());
        let depth = d.layers.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut width_of = vec![0usize; depth];
        let mut pos = vec![(0usize, 0usize); d.ids.len()];
        for (i, &l) in d.layers.iter().enumerate() {
            let l = l as usize;
            pos[i] = (
                GAP_X + width_of[l] * (W + GAP_X),
                GAP_Y / 2 + l * (H + GAP_Y),
            );
            width_of[l] += 1;
        }
        let width = width_of.iter().copied().max().unwrap_or(0) * (W + GAP_X) + GAP_X;
        let height = depth * (H + GAP_Y) + GAP_Y / 2;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"12\">"
        );
        out.push_str("<g stroke=\"#555\" fill=\"none\">\n");
        for &(a, b, c) in &d.edges {
            let (ax, ay) = (pos[a].0 + W / 2, pos[a].1 + H);
            let (bx, by) = (pos[b].0 + W / 2, pos[b].1);
            let _ = writeln!(
                out,
                "<line x1=\"{ax}\" y1=\"{ay}\" x2=\"{bx}\" y2=\"{by}\"><title>{c}</title></line>"
            );
        }
        out.push_str("</g>\n");
        for (i, &(x, y)) in pos.iter().enumerate() {
            let _ = writeln!(
                out,
                "<g><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"4\" fill=\"{}\" stroke=\"#333\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                xml_escape(&d.ids[i]),
                colour(d.kinds[i]),
                x + W / 2,
                y + H / 2 + 4,
                xml_escape(&d.labels[i]),
            );
        }
        out.push_str("</svg>\n");
        out
    }
}
