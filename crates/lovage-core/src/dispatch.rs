//! Sending a task call somewhere: a pool runs it here, a queue runs it on a worker.

use serde::de::DeserializeOwned;

use crate::TypedSignature;

/// Something a task call can be sent to. The `delay` helper that `#[task]` generates takes any
/// `Dispatch`, so `add::delay(&pool, 1, 2)` and `add::delay(&app, 1, 2)` read the same.
pub trait Dispatch {
    /// What the caller gets back: a pool's task handle, a queue's async result.
    type Handle<R: DeserializeOwned + Send + 'static>;
    /// Why sending can fail.
    type Error;

    /// Sends a call.
    fn dispatch<R: DeserializeOwned + Send + 'static>(
        &self,
        sig: TypedSignature<R>,
    ) -> Result<Self::Handle<R>, Self::Error>;
}
