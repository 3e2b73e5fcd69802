//! Reading the grouped pictures (DOT and SVG) that arrays and bags draw of their graphs.

/// The boxes of a grouped DOT picture: (operation, node count) from labels `name ×count`.
pub fn grouped_boxes(dot: &str) -> Vec<(String, usize)> {
    dot.lines()
        .filter_map(|l| {
            let label = l.split_once("[label=\"")?.1.split_once("\", fillcolor")?.0;
            let (name, count) = label.rsplit_once(" ×")?;
            Some((name.to_owned(), count.parse().ok()?))
        })
        .collect()
}

/// The node count of the box of operation `op`, if the picture has one.
pub fn box_count(boxes: &[(String, usize)], op: &str) -> Option<usize> {
    boxes.iter().find(|(name, _)| name == op).map(|b| b.1)
}

/// Panics unless `svg` parses as XML and draws one rectangle per box of its DOT picture.
pub fn assert_one_rect_per_box(svg: &str, boxes: &[(String, usize)]) {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(rects, boxes.len(), "{svg}");
}
