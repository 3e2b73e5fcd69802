//! Pictures of a graph: DOT text for Graphviz, and SVG drawn here with a layered layout (no
//! Graphviz needed). Above [`GROUP_ABOVE`] nodes both draw one box per task name instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::graph::{Graph, Inner, NodeKind};
use crate::{GraphError, Outputs};

/// Graphs with more nodes than this are drawn grouped by task name.
pub const GROUP_ABOVE: usize = 10_000;

/// A picture of a graph, ready to render as DOT or SVG: boxes with a label and a fill colour,
/// each in a layer (one below its deepest input), and counted edges between them. Built from a
/// local [`Graph`] by [`Graph::to_dot`]/[`Graph::to_svg`], or from any list of nodes with
/// [`Picture::new`] (`lovage graph ID` draws a broker run's nodes coloured by state). Above
/// [`GROUP_ABOVE`] nodes it holds one box per group (task name) instead of one per node.
#[derive(Debug, Clone)]
pub struct Picture {
    ids: Vec<String>,
    labels: Vec<String>,
    fills: Vec<String>,
    layers: Vec<u32>,
    /// (from, to, how many edges of the graph this stands for)
    edges: Vec<(usize, usize, usize)>,
}

/// One node given to [`Picture::new`].
#[derive(Debug, Clone)]
pub struct PictureNode {
    /// Unique among the nodes: the DOT node name and the SVG box's tooltip.
    pub id: String,
    /// What the box says; a `\n` starts a new line.
    pub label: String,
    /// The box's fill, a CSS colour.
    pub fill: String,
    /// The group it joins when the picture is grouped (its task name).
    pub group: String,
    /// A structural node (a collect, an item of a tuple) that a grouped picture leaves out,
    /// drawing an edge from each of its inputs straight to each of its readers instead, so
    /// that operations connect to the operations they read. Ungrouped pictures draw it.
    pub through: bool,
}

/// The last `::` segment of a task name.
fn short(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

/// Each node's layer: one below its deepest input (longest path from a root, Kahn's order, so
/// the nodes may come in any order). Nodes on a cycle, which a graph never has, stay in layer 0.
fn layers_of(n: usize, edges: &[(u32, u32)]) -> Vec<u32> {
    let mut indegree = vec![0u32; n];
    let mut out_start = vec![0usize; n + 1];
    for &(a, b) in edges {
        indegree[b as usize] += 1;
        out_start[a as usize + 1] += 1;
    }
    for i in 0..n {
        out_start[i + 1] += out_start[i];
    }
    let mut fill = out_start.clone();
    let mut outs = vec![0u32; edges.len()];
    for &(a, b) in edges {
        outs[fill[a as usize]] = b;
        fill[a as usize] += 1;
    }
    let mut layer = vec![0u32; n];
    let mut ready: Vec<u32> = (0..n as u32)
        .filter(|&i| indegree[i as usize] == 0)
        .collect();
    while let Some(a) = ready.pop() {
        for &b in &outs[out_start[a as usize]..out_start[a as usize + 1]] {
            let b = b as usize;
            layer[b] = layer[b].max(layer[a as usize] + 1);
            indegree[b] -= 1;
            if indegree[b] == 0 {
                ready.push(b as u32);
            }
        }
    }
    layer
}

/// `nodes` and `edges` without the nodes marked [`PictureNode::through`]: an edge into one
/// of those becomes an edge from each (drawn) node behind it to each of its readers. Also
/// each kept node's index in `nodes`.
fn skip_through(nodes: Vec<PictureNode>, edges: &[(u32, u32)]) -> Skipped {
    if !nodes.iter().any(|n| n.through) {
        let original = (0..nodes.len()).collect();
        return (nodes, edges.to_vec(), original);
    }
    let through: Vec<bool> = nodes.iter().map(|n| n.through).collect();
    let layer = layers_of(nodes.len(), edges);
    let mut inputs: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
    for &(a, b) in edges {
        if through[b as usize] {
            inputs[b as usize].push(a);
        }
    }
    // Resolved in layer order, so a skipped node's skipped inputs are resolved before it.
    let mut order: Vec<usize> = (0..nodes.len()).filter(|&n| through[n]).collect();
    order.sort_by_key(|&n| layer[n]);
    let mut behind: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
    for n in order {
        let mut drawn = Vec::new();
        for &a in &inputs[n] {
            if through[a as usize] {
                drawn.extend_from_slice(&behind[a as usize]);
            } else {
                drawn.push(a);
            }
        }
        behind[n] = drawn;
    }
    let mut index = vec![u32::MAX; nodes.len()];
    let mut kept = Vec::with_capacity(nodes.len());
    let mut original = Vec::with_capacity(nodes.len());
    for (n, node) in nodes.into_iter().enumerate() {
        if !through[n] {
            index[n] = kept.len() as u32;
            kept.push(node);
            original.push(n);
        }
    }
    let mut out = Vec::with_capacity(edges.len());
    for &(a, b) in edges {
        if through[b as usize] {
            continue;
        }
        if through[a as usize] {
            out.extend(
                behind[a as usize]
                    .iter()
                    .map(|&s| (index[s as usize], index[b as usize])),
            );
        } else {
            out.push((index[a as usize], index[b as usize]));
        }
    }
    (kept, out, original)
}

/// What [`skip_through`] leaves: the drawn nodes, their edges, and each one's original index.
type Skipped = (Vec<PictureNode>, Vec<(u32, u32)>, Vec<usize>);

/// Each group's layer: one below its deepest input group (edges inside a group left out).
/// When the groups' edges go round a cycle (a group feeding one that feeds it back), each
/// group keeps its shallowest member's layer instead, with empty layers closed up.
fn group_layers(
    groups: usize,
    edge_count: &BTreeMap<(usize, usize), usize>,
    shallowest: &[u32],
) -> Vec<u32> {
    let between: Vec<(u32, u32)> = edge_count
        .keys()
        .filter(|(a, b)| a != b)
        .map(|&(a, b)| (a as u32, b as u32))
        .collect();
    let layers = layers_of(groups, &between);
    if between
        .iter()
        .all(|&(a, b)| layers[a as usize] < layers[b as usize])
    {
        return layers;
    }
    let mut used: Vec<u32> = shallowest.to_vec();
    used.sort_unstable();
    used.dedup();
    shallowest
        .iter()
        .map(|l| used.binary_search(l).unwrap_or(0) as u32)
        .collect()
}

impl Picture {
    /// A picture of `nodes` and `edges` (`(from, to)` indices into `nodes`, an input to its
    /// reader). Above [`GROUP_ABOVE`] nodes, one box per [`PictureNode::group`], at the shallowest
    /// layer of its members, labelled and filled by `group_box(group, members)`; edges between
    /// groups carry their counts.
    pub fn new(
        nodes: Vec<PictureNode>,
        edges: &[(u32, u32)],
        group_box: impl Fn(&str, &[usize]) -> (String, String),
    ) -> Picture {
        if nodes.len() > GROUP_ABOVE {
            return Picture::grouped(nodes, edges, group_box);
        }
        let layer = layers_of(nodes.len(), edges);
        let mut p = Picture {
            ids: Vec::with_capacity(nodes.len()),
            labels: Vec::with_capacity(nodes.len()),
            fills: Vec::with_capacity(nodes.len()),
            layers: layer,
            edges: edges
                .iter()
                .map(|&(a, b)| (a as usize, b as usize, 1))
                .collect(),
        };
        for n in nodes {
            p.ids.push(n.id);
            p.labels.push(n.label);
            p.fills.push(n.fill);
        }
        p
    }

    /// A picture of `nodes` and `edges` with one box per [`PictureNode::group`] whatever the
    /// size (what [`Picture::new`] draws above [`GROUP_ABOVE`] nodes): each box one layer
    /// below the groups it reads, labelled and filled by `group_box(group, members)`
    /// (`members` are indices into `nodes`), and one edge per pair of groups carrying how many
    /// edges of the graph it stands for (edges inside a group draw as a loop). Nodes marked
    /// [`PictureNode::through`] are left out, their inputs joined to their readers.
    pub fn grouped(
        nodes: Vec<PictureNode>,
        edges: &[(u32, u32)],
        group_box: impl Fn(&str, &[usize]) -> (String, String),
    ) -> Picture {
        let (nodes, edges, original) = skip_through(nodes, edges);
        let layer = layers_of(nodes.len(), &edges);
        let mut group_of_name: BTreeMap<&str, usize> = BTreeMap::new();
        for n in &nodes {
            let next = group_of_name.len();
            group_of_name.entry(n.group.as_str()).or_insert(next);
        }
        let groups = group_of_name.len();
        let mut names = vec![""; groups];
        for (name, &i) in &group_of_name {
            names[i] = name;
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        let mut shallowest = vec![u32::MAX; groups];
        let mut member_of: Vec<usize> = Vec::with_capacity(nodes.len());
        for (n, node) in nodes.iter().enumerate() {
            let i = group_of_name[node.group.as_str()];
            members[i].push(original[n]);
            shallowest[i] = shallowest[i].min(layer[n]);
            member_of.push(i);
        }
        let mut edge_count: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for &(a, b) in &edges {
            *edge_count
                .entry((member_of[a as usize], member_of[b as usize]))
                .or_default() += 1;
        }
        let glayer = group_layers(groups, &edge_count, &shallowest);
        let (labels, fills) = (0..groups)
            .map(|i| group_box(names[i], &members[i]))
            .unzip();
        Picture {
            ids: names.iter().map(|n| n.to_string()).collect(),
            labels,
            fills,
            layers: glayer,
            edges: edge_count
                .into_iter()
                .map(|((a, b), c)| (a, b, c))
                .collect(),
        }
    }

    /// How many boxes it draws (nodes, or groups when grouped).
    pub fn boxes(&self) -> usize {
        self.ids.len()
    }

    /// DOT text for Graphviz: one filled box per node, an edge from each input to its reader
    /// (labelled with its count when it stands for several).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph lovage {\n  rankdir=TB;\n  node [shape=box, style=filled, fontname=\"monospace\"];\n");
        for i in 0..self.ids.len() {
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\", fillcolor=\"{}\"];",
                dot_escape(&self.ids[i]),
                dot_escape(&self.labels[i]).replace('\n', "\\n"),
                dot_escape(&self.fills[i])
            );
        }
        for &(a, b, c) in &self.edges {
            let label = if c > 1 {
                format!(" [label=\"{c}\"]")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{label};",
                dot_escape(&self.ids[a]),
                dot_escape(&self.ids[b])
            );
        }
        out.push_str("}\n");
        out
    }

    /// An SVG picture laid out here in layers (in order of the nodes within a layer); no
    /// Graphviz needed. Boxes are as wide as the longest label line; an edge that stands for
    /// several says how many, and one from a box to itself (inside a group) is a loop.
    pub fn to_svg(&self) -> String {
        const MIN_W: usize = 160;
        // A monospace glyph at font-size 12 is about 7.2 px wide.
        const CHAR_W: f64 = 7.2;
        const LINE: usize = 14;
        const GAP_X: usize = 30;
        const GAP_Y: usize = 44;
        let lines = self
            .labels
            .iter()
            .map(|l| l.lines().count().max(1))
            .max()
            .unwrap_or(1);
        let longest = self
            .labels
            .iter()
            .flat_map(|l| l.lines())
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let w = MIN_W.max((longest as f64 * CHAR_W).ceil() as usize + 16);
        let h = 14 + lines * LINE;
        let depth = self
            .layers
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut width_of = vec![0usize; depth];
        let mut pos = vec![(0usize, 0usize); self.ids.len()];
        for (i, &l) in self.layers.iter().enumerate() {
            let l = l as usize;
            pos[i] = (
                GAP_X + width_of[l] * (w + GAP_X),
                GAP_Y / 2 + l * (h + GAP_Y),
            );
            width_of[l] += 1;
        }
        // Room on the right for loops and bowed edges.
        let width = width_of.iter().copied().max().unwrap_or(0) * (w + GAP_X) + GAP_X + w / 2;
        let height = depth * (h + GAP_Y) + GAP_Y / 2;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"12\" style=\"background:white\">"
        );
        out.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>\n");
        out.push_str("<g stroke=\"#555\" fill=\"none\" marker-end=\"url(#arrow)\">\n");
        let mut counts = String::new();
        for &(a, b, c) in &self.edges {
            if a == b {
                // A loop on the box's right side, for edges between members of one group.
                let (x, y) = (pos[a].0 + w, pos[a].1);
                let _ = writeln!(
                    out,
                    "<path class=\"loop\" d=\"M {x} {} C {} {}, {} {}, {x} {}\"><title>{c}</title></path>",
                    y + h / 4,
                    x + 24,
                    y,
                    x + 24,
                    y + h,
                    y + 3 * h / 4
                );
                let _ = writeln!(
                    counts,
                    "<text x=\"{}\" y=\"{}\">{c}</text>",
                    x + 22,
                    y + h / 2 + 4
                );
                continue;
            }
            let (ax, ay) = (pos[a].0 + w / 2, pos[a].1 + h);
            let (bx, by) = (pos[b].0 + w / 2, pos[b].1);
            // An edge over more than one layer bows out to the right, past the boxes between.
            let bow = if by > ay + GAP_Y {
                w / 2 + GAP_X / 2
            } else {
                0
            };
            if bow == 0 {
                let _ = writeln!(
                    out,
                    "<line x1=\"{ax}\" y1=\"{ay}\" x2=\"{bx}\" y2=\"{by}\"><title>{c}</title></line>"
                );
            } else {
                let _ = writeln!(
                    out,
                    "<path class=\"long\" d=\"M {ax} {ay} C {} {}, {} {}, {bx} {by}\"><title>{c}</title></path>",
                    ax + bow * 4 / 3,
                    ay + GAP_Y,
                    bx + bow * 4 / 3,
                    by - GAP_Y
                );
            }
            if c > 1 {
                let _ = writeln!(
                    counts,
                    "<text x=\"{}\" y=\"{}\">{c}</text>",
                    (ax + bx) / 2 + 4 + bow,
                    (ay + by) / 2 + 4
                );
            }
        }
        out.push_str("</g>\n");
        if !counts.is_empty() {
            out.push_str("<g fill=\"#555\" font-size=\"11\">\n");
            out.push_str(&counts);
            out.push_str("</g>\n");
        }
        for (i, &(x, y)) in pos.iter().enumerate() {
            let label = &self.labels[i];
            let n = label.lines().count().max(1);
            let first = y + h / 2 + 4 - (n - 1) * LINE / 2;
            let mut text = String::new();
            for (k, line) in label.lines().enumerate() {
                let _ = write!(
                    text,
                    "<tspan x=\"{}\" y=\"{}\">{}</tspan>",
                    x + w / 2,
                    first + k * LINE,
                    xml_escape(line)
                );
            }
            let _ = writeln!(
                out,
                "<g><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"4\" fill=\"{}\" stroke=\"#333\"/><text text-anchor=\"middle\">{text}</text></g>",
                xml_escape(&self.ids[i]),
                xml_escape(&self.fills[i]),
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// How [`picture`] draws a graph's nodes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// One box per node, or per task name above [`GROUP_ABOVE`] nodes.
    BySize,
    /// One box per task name (operation) at any size.
    Always,
}

/// A picture of the nodes of `g` marked in `keep` (all of them for `None`).
fn picture(g: &Inner, keep: Option<&[bool]>, grouping: Grouping) -> Picture {
    let kept = |n: usize| keep.is_none_or(|k| k[n]);
    // The kept nodes renumbered densely, in order of addition.
    let mut index = vec![u32::MAX; g.len()];
    let mut order = Vec::new();
    for n in (0..g.len()).filter(|&n| kept(n)) {
        index[n] = order.len() as u32;
        order.push(n);
    }
    // A structural node is drawn through (left out, its inputs joined to its readers) in a
    // grouped picture when it has inputs or readers: an empty `collect` (a task's list
    // argument with nothing in it, as every frame partial of files has) is no operation.
    let mut read = vec![false; g.len()];
    for &n in &order {
        for &d in g.deps_of(n as u32) {
            read[d as usize] = true;
        }
    }
    let nodes = order
        .iter()
        .map(|&n| {
            let op = &g.ops[n];
            PictureNode {
                id: g.key(n as u32),
                label: short(op.name()).to_owned(),
                fill: colour(op.kind()).to_owned(),
                group: op.name().to_owned(),
                through: grouping == Grouping::Always
                    && op.kind() == NodeKind::Structural
                    && (!g.deps_of(n as u32).is_empty() || read[n]),
            }
        })
        .collect();
    let mut edges = Vec::with_capacity(g.deps.len());
    for &n in &order {
        for &d in g.deps_of(n as u32) {
            edges.push((index[d as usize], index[n]));
        }
    }
    let group_box = |name: &str, members: &[usize]| {
        let kind = g.ops[order[members[0]]].kind();
        (
            format!("{} ×{}", short(name), members.len()),
            colour(kind).to_owned(),
        )
    };
    match grouping {
        Grouping::BySize => Picture::new(nodes, &edges, group_box),
        Grouping::Always => Picture::grouped(nodes, &edges, group_box),
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
        picture(&self.inner(), None, Grouping::BySize).to_dot()
    }

    /// The graph as an SVG picture, laid out here in layers (a node one layer below its
    /// deepest dependency, in order of addition within a layer). Above 10,000 nodes, grouped
    /// by task name as [`to_dot`](Graph::to_dot) is.
    pub fn to_svg(&self) -> String {
        picture(&self.inner(), None, Grouping::BySize).to_svg()
    }

    /// [`to_dot`](Graph::to_dot) grouped by task name at any size: one box per task name
    /// (a collection's operation: `bag-partial`, `lovage.array.map`, …) labelled with its
    /// node count, one edge per pair of names labelled with how many edges it stands for.
    pub fn to_dot_grouped(&self) -> String {
        picture(&self.inner(), None, Grouping::Always).to_dot()
    }

    /// [`to_svg`](Graph::to_svg) grouped by task name at any size, as
    /// [`to_dot_grouped`](Graph::to_dot_grouped) is.
    pub fn to_svg_grouped(&self) -> String {
        picture(&self.inner(), None, Grouping::Always).to_svg()
    }

    /// A picture of only the nodes `outputs` need (they and everything they read), grouped
    /// by task name at any size: how a collection draws the graph its `compute` runs. Refuses
    /// a handle of another graph.
    pub fn grouped_picture<O: Outputs>(&self, outputs: &O) -> Result<Picture, GraphError> {
        let g = self.inner();
        let mut stack = Vec::new();
        outputs.nodes(g.id, &mut stack)?;
        let mut keep = vec![false; g.len()];
        while let Some(x) = stack.pop() {
            if !std::mem::replace(&mut keep[x as usize], true) {
                stack.extend(g.deps_of(x).iter().copied());
            }
        }
        Ok(picture(&g, Some(&keep), Grouping::Always))
    }
}
