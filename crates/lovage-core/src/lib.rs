//! lovage's task model: what a task is, how it is named, encoded, identified and how it fails.
//!
//! The layers above (pools, brokers, workers) all speak these types. Most users reach them
//! through the `lovage` crate.

pub mod after;
pub mod cancel;
pub mod canvas;
pub mod codec;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod id;
pub mod options;
pub mod registry;
pub mod resources;
pub mod retry;
pub mod signature;
pub mod state;

pub use after::{After, AfterArg, IntoAfterArg, Keep};
pub use cancel::{check_cancelled, is_cancelled, CancelReason, CancelToken};
pub use canvas::{chain, chord, group, Canvas, Failure};
pub use codec::{Codec, CodecError, WIRE_VERSION};
pub use dispatch::Dispatch;
pub use error::{kinds, TaskError};
pub use id::TaskId;
pub use options::{parse_duration, parse_rate, ParseError, TaskOptions};
pub use registry::{block_on, Registry, TaskEntry, TaskFn};
pub use resources::{parse_resources, resource_queue, IntoResourceUnits, ResourceUnits, Resources};
pub use retry::RetryPolicy;
pub use signature::{Message, Signature, TypedSignature};
pub use state::TaskState;

/// Items the `#[task]` macro expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::error::{ErrorConverter, ViaBoxedError, ViaDisplay, ViaStdError};
    pub use crate::registry::{TaskEntry, TaskFn, TaskFuture};
    pub use crate::{
        After, Codec, Dispatch, IntoAfterArg, ResourceUnits, Resources, RetryPolicy, Signature,
        TaskError, TaskOptions, TypedSignature,
    };
    pub use inventory;
    pub use serde;
    pub use std::time::Duration;
}
