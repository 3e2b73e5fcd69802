//! Reading the grouped pictures (DOT and SVG) that arrays and bags draw of their graphs (their
//! boxes: `lovage_testkit::grouped_boxes`).

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
