//! A node's arguments: each one a value or a handle to another node, typed per position.

use lovage_core::{Codec, CodecError, TaskError};
use serde::Serialize;

use crate::graph::{Delayed, Fnv, Graph, Inputs};
use crate::GraphError;

/// One argument of a delayed call: a value given now, or the result of another node.
#[derive(Debug, Clone)]
pub enum Arg<T> {
    /// A value known when the graph is built.
    Value(T),
    /// The result of another node of the same graph.
    Node(Delayed<T>),
}

/// What a delayed call accepts where the task takes a `T`: a `T`, a `Delayed<T>`, or (for a
/// `Vec<T>` parameter) a `Vec<Delayed<T>>`, which becomes one collecting node.
pub trait IntoArg<T> {
    /// The argument, adding a node to `g` when a collection of handles must be gathered.
    fn into_arg(self, g: &Graph) -> Arg<T>;
}

impl<T> IntoArg<T> for T {
    fn into_arg(self, _g: &Graph) -> Arg<T> {
        Arg::Value(self)
    }
}

impl<T> IntoArg<T> for Delayed<T> {
    fn into_arg(self, _g: &Graph) -> Arg<T> {
        Arg::Node(self)
    }
}

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for Vec<Delayed<T>> {
    fn into_arg(self, g: &Graph) -> Arg<Vec<T>> {
        Arg::Node(g.collect(self))
    }
}

/// A tuple of [`Arg`]s: what a node needs from its dependencies to run.
pub trait ArgTuple: Send + Sync + 'static {
    /// The argument values once every dependency has its result.
    type Values;
    /// Appends the dependencies' node indices in argument order; refuses a foreign handle.
    fn deps(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError>;
    /// The values: constants cloned, dependencies' results read (in `deps` order).
    fn resolve(&self, inputs: &Inputs<'_>) -> Result<Self::Values, TaskError>;
}

/// Arguments of a registered task: hashed for its key and encoded for a process pool.
pub trait TaskArgs: ArgTuple {
    /// Feeds the arguments to a key's hash: constants by their encoding, dependencies by key.
    fn hash_args(&self, h: &mut Fnv, codec: Codec, hashes: &[u64]) -> Result<(), CodecError>;
    /// Encodes resolved values as the task's argument sequence (as `task::s` does).
    fn encode(values: &Self::Values, codec: Codec) -> Result<Vec<u8>, CodecError>;
    /// The arguments as JSON values for a broker's workers: constants and dependencies that
    /// have a value here (in `inputs`) filled in, the others left as `null` with their
    /// position pushed to `slots` (in dependency order).
    fn template(
        &self,
        inputs: &Inputs<'_>,
        args: &mut Vec<serde_json::Value>,
        slots: &mut Vec<u32>,
    ) -> Result<(), TaskError>;
}

/// A value as JSON, for a stored graph's arguments.
fn json_arg<T: Serialize>(v: &T) -> Result<serde_json::Value, TaskError> {
    serde_json::to_value(v).map_err(|e| {
        TaskError::new(
            lovage_core::kinds::FAILED,
            format!("a delayed call's argument cannot be written as JSON: {e}"),
        )
    })
}

impl ArgTuple for () {
    type Values = ();
    fn deps(&self, _graph: u32, _out: &mut Vec<u32>) -> Result<(), GraphError> {
        Ok(())
    }
    fn resolve(&self, _inputs: &Inputs<'_>) -> Result<(), TaskError> {
        Ok(())
    }
}

impl TaskArgs for () {
    fn hash_args(&self, _h: &mut Fnv, _codec: Codec, _hashes: &[u64]) -> Result<(), CodecError> {
        Ok(())
    }
    fn encode(_values: &(), codec: Codec) -> Result<Vec<u8>, CodecError> {
        // `task::s()` encodes no arguments as an empty sequence, not as unit.
        codec.encode(&[0u8; 0], "task arguments")
    }
    fn template(
        &self,
        _inputs: &Inputs<'_>,
        _args: &mut Vec<serde_json::Value>,
        _slots: &mut Vec<u32>,
    ) -> Result<(), TaskError> {
        Ok(())
    }
}

macro_rules! arg_tuples {
    ($( ($($T:ident $i:tt),+) )*) => {$(
        impl<$($T: Clone + Send + Sync + 'static),+> ArgTuple for ($(Arg<$T>,)+) {
            type Values = ($($T,)+);
            fn deps(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError> {
                $( if let Arg::Node(d) = &self.$i { out.push(d.checked(graph)?); } )+
                Ok(())
            }
            fn resolve(&self, inputs: &Inputs<'_>) -> Result<Self::Values, TaskError> {
                let mut _k = 0usize;
                Ok(($(
                    match &self.$i {
                        Arg::Value(v) => v.clone(),
                        Arg::Node(_) => {
                            let v = inputs.get::<$T>(_k)?;
                            _k += 1;
                            v
                        }
                    },
                )+))
            }
        }

        impl<$($T: Clone + Send + Sync + Serialize + 'static),+> TaskArgs for ($(Arg<$T>,)+) {
            fn hash_args(&self, h: &mut Fnv, codec: Codec, hashes: &[u64]) -> Result<(), CodecError> {
                $(
                    match &self.$i {
                        Arg::Value(v) => {
                            h.byte(0);
                            h.bytes(&codec.encode(v, "a delayed call's argument")?);
                        }
                        Arg::Node(d) => {
                            h.byte(1);
                            h.u64(hashes.get(d.node as usize).copied().unwrap_or_default());
                        }
                    }
                )+
                Ok(())
            }
            fn encode(values: &Self::Values, codec: Codec) -> Result<Vec<u8>, CodecError> {
                codec.encode(values, "task arguments")
            }
            fn template(
                &self,
                inputs: &Inputs<'_>,
                args: &mut Vec<serde_json::Value>,
                slots: &mut Vec<u32>,
            ) -> Result<(), TaskError> {
                let mut _k = 0usize;
                $(
                    match &self.$i {
                        Arg::Value(v) => args.push(json_arg(v)?),
                        Arg::Node(_) => {
                            match inputs.known::<$T>(_k) {
                                Some(v) => args.push(json_arg(v)?),
                                None => {
                                    slots.push(args.len() as u32);
                                    args.push(serde_json::Value::Null);
                                }
                            }
                            _k += 1;
                        }
                    }
                )+
                Ok(())
            }
        }
    )*};
}

arg_tuples! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11)
}
