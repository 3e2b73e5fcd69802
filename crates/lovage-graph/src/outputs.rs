//! What `compute` can be asked for: a handle, a tuple of outputs, a `Vec` of outputs.

use crate::graph::{FnOp, NodeKind, NodeOp, Value};
use crate::plan::Plan;
use crate::GraphError;

/// A finished run, as [`Outputs`] reads it. Not a public API.
#[doc(hidden)]
pub struct Results<'a>(pub(crate) &'a Plan<'a>);

/// Values to keep in the graph after `persist`. Not a public API.
#[doc(hidden)]
#[derive(Default)]
pub struct Kept(pub(crate) Vec<(u32, Box<dyn NodeOp>)>);

/// What [`Graph::compute`](crate::Graph::compute) returns values for: a [`Delayed`](crate::Delayed),
/// a tuple of outputs (up to 6) or a `Vec` of outputs.
pub trait Outputs {
    /// The values.
    type Value;
    /// Each output's own result.
    type Partial;
    /// Appends the requested nodes; refuses a handle of another graph.
    fn nodes(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError>;
    /// The values, or the first output's error.
    fn take(&self, r: &Results<'_>) -> Result<Self::Value, GraphError>;
    /// Every output's result.
    fn take_partial(&self, r: &Results<'_>) -> Self::Partial;
    /// Records the values to keep in the graph.
    fn persist(&self, r: &Results<'_>, kept: &mut Kept);
}

impl<T: Clone + Send + Sync + 'static> Outputs for crate::Delayed<T> {
    type Value = T;
    type Partial = Result<T, GraphError>;

    fn nodes(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError> {
        out.push(self.checked(graph)?);
        Ok(())
    }

    fn take(&self, r: &Results<'_>) -> Result<T, GraphError> {
        let v = r.0.result(self.node)?;
        v.downcast_ref::<T>().cloned().ok_or_else(|| {
            GraphError::Internal(format!(
                "node {} holds a value of another type",
                r.0.g.key(self.node)
            ))
        })
    }

    fn take_partial(&self, r: &Results<'_>) -> Self::Partial {
        self.take(r)
    }

    fn persist(&self, r: &Results<'_>, kept: &mut Kept) {
        if let Ok(v) = self.take(r) {
            let name = r.0.g.ops[self.node as usize].name();
            let op = FnOp {
                name,
                kind: NodeKind::Structural,
                form: crate::graph::Form::Opaque,
                f: move |_: &crate::Inputs<'_>| Ok(Box::new(v.clone()) as Value),
            };
            kept.0.push((self.node, Box::new(op)));
        }
    }
}

impl<O: Outputs> Outputs for Vec<O> {
    type Value = Vec<O::Value>;
    type Partial = Vec<O::Partial>;

    fn nodes(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError> {
        self.iter().try_for_each(|o| o.nodes(graph, out))
    }
    fn take(&self, r: &Results<'_>) -> Result<Self::Value, GraphError> {
        self.iter().map(|o| o.take(r)).collect()
    }
    fn take_partial(&self, r: &Results<'_>) -> Self::Partial {
        self.iter().map(|o| o.take_partial(r)).collect()
    }
    fn persist(&self, r: &Results<'_>, kept: &mut Kept) {
        self.iter().for_each(|o| o.persist(r, kept))
    }
}

macro_rules! output_tuples {
    ($( ($($O:ident $i:tt),+) )*) => {$(
        impl<$($O: Outputs),+> Outputs for ($($O,)+) {
            type Value = ($($O::Value,)+);
            type Partial = ($($O::Partial,)+);
            fn nodes(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError> {
                $( self.$i.nodes(graph, out)?; )+
                Ok(())
            }
            fn take(&self, r: &Results<'_>) -> Result<Self::Value, GraphError> {
                Ok(($(self.$i.take(r)?,)+))
            }
            fn take_partial(&self, r: &Results<'_>) -> Self::Partial {
                ($(self.$i.take_partial(r),)+)
            }
            fn persist(&self, r: &Results<'_>, kept: &mut Kept) {
                $( self.$i.persist(r, kept); )+
            }
        }
    )*};
}

output_tuples! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
}
