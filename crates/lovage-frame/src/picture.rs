//! Pictures of a frame's graph, grouped by operation as bags' and arrays' are: one box per
//! task name (`lovage.frame.partial ×20`, `lovage.frame.combine ×3`, `lovage.frame.finish
//! ×1`, …) whatever the partition count, one edge per pair of operations carrying its count.

use lovage_graph::{GraphError, Picture};

use crate::agg::Agg;
use crate::frame::{Frame, GroupBy};
use crate::Error;

impl<'g> Frame<'g> {
    /// A picture of the graph [`collect`](Frame::collect) runs (a partition's source, its
    /// steps, then the concatenation), grouped by operation. It adds the nodes `collect`
    /// would; to draw a reduction or a group-by, use [`GroupBy::picture`] or pass its handle
    /// to [`Graph::grouped_picture`](lovage_graph::Graph::grouped_picture).
    pub fn picture(&self) -> Result<Picture, Error> {
        drawn(self.g.grouped_picture(&self.collect()))
    }

    /// [`picture`](Frame::picture) in Graphviz's DOT language.
    pub fn to_dot(&self) -> Result<String, Error> {
        Ok(self.picture()?.to_dot())
    }

    /// [`picture`](Frame::picture) as SVG, laid out here (no Graphviz needed).
    pub fn to_svg(&self) -> Result<String, Error> {
        Ok(self.picture()?.to_svg())
    }
}

impl<'g> GroupBy<'g> {
    /// A picture of the graph [`agg`](GroupBy::agg)`(aggs)` runs, grouped by operation:
    /// `lovage.frame.partial ×n → lovage.frame.combine ×… → lovage.frame.finish` for a tree,
    /// `split_partial → getitem → agg_piece → concat` for a `split_out` exchange. It adds the
    /// nodes `agg` would.
    pub fn picture<A: AsRef<[Agg]>>(&self, aggs: A) -> Result<Picture, Error> {
        let out = self.agg(aggs)?;
        drawn(self.frame.g.grouped_picture(&out))
    }

    /// [`picture`](GroupBy::picture) in Graphviz's DOT language.
    pub fn to_dot<A: AsRef<[Agg]>>(&self, aggs: A) -> Result<String, Error> {
        Ok(self.picture(aggs)?.to_dot())
    }

    /// [`picture`](GroupBy::picture) as SVG, laid out here (no Graphviz needed).
    pub fn to_svg<A: AsRef<[Agg]>>(&self, aggs: A) -> Result<String, Error> {
        Ok(self.picture(aggs)?.to_svg())
    }
}

fn drawn(p: Result<Picture, GraphError>) -> Result<Picture, Error> {
    p.map_err(|e| Error::Collections(e.into()))
}
