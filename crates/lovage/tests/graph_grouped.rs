//! `lovage graph ID --grouped`: a collection's graph submitted to a SQLite broker, drawn by
//! the CLI with one box per operation, as the collection draws it locally.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use std::process::Command;

use lovage::array::Array;
use lovage::graph::Graph;

/// The boxes of a grouped DOT picture: (operation, its label) by node name.
fn boxes(dot: &str) -> Vec<(String, String)> {
    dot.lines()
        .filter(|l| !l.contains(" -> "))
        .filter_map(|l| {
            let (id, rest) = l.trim().strip_prefix('"')?.split_once("\" [label=\"")?;
            let (label, _) = rest.split_once("\", fillcolor")?;
            Some((id.to_owned(), label.to_owned()))
        })
        .collect()
}

fn edges(dot: &str) -> Vec<String> {
    let mut e: Vec<String> = dot
        .lines()
        .filter(|l| l.contains(" -> "))
        .map(|l| l.trim().to_owned())
        .collect();
    e.sort();
    e
}

#[test]
fn a_submitted_array_is_drawn_grouped_by_operation() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("graph.db").display());
    let app = lovage::App::with_backend(lovage::connect(&url).unwrap());
    let client = app.client().unwrap();
    let g = Graph::new();
    let x = Array::random(&g, &[40, 40], &[10, 10], 1)
        .unwrap()
        .materialize();
    let y = x.rechunk(&[20, 20]).unwrap();
    let total = y.sum();
    let local = g.grouped_picture(&total).unwrap().to_dot();
    let sent = g.submit(&client, vec![total]).unwrap();
    let id = sent.graph.to_string();
    let graph = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lovage"))
            .args(["graph", &id])
            .args(args)
            .args(["--broker", &url])
            .env("LOVAGE_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };

    // One box per operation, with the same counts as the local picture, and the nodes' state
    // (no worker runs here, so every node is pending).
    let dot = graph(&["--grouped", "--format", "dot"]);
    let local_boxes = boxes(&local);
    let shown = boxes(&dot);
    assert_eq!(shown.len(), local_boxes.len(), "{dot}\n{local}");
    assert!(local_boxes.len() >= 2, "{local}");
    for (name, label) in &local_boxes {
        let count = label.rsplit_once(" ×").unwrap().1;
        let want = format!("{name} ×{count}\\nPENDING {count}");
        assert!(
            shown.iter().any(|(id, l)| id == name && *l == want),
            "no box {want:?} in\n{dot}"
        );
    }
    assert!(
        shown.iter().any(|(id, _)| id == "lovage.array.regrid"),
        "{dot}"
    );
    assert_eq!(edges(&dot), edges(&local), "{dot}\n{local}");

    // The SVG has the same boxes; ungrouped, one box per node.
    let svg = graph(&["--grouped", "--format", "svg"]);
    assert_eq!(svg.matches("<rect").count(), shown.len(), "{svg}");
    let plain = graph(&["--format", "dot"]);
    let nodes = boxes(&plain).len();
    let counted: usize = local_boxes
        .iter()
        .map(|(_, l)| l.rsplit_once(" ×").unwrap().1.parse::<usize>().unwrap())
        .sum();
    assert!(nodes >= counted, "{plain}");
}
