//! The ordered, lazily-fed chunk window behind both pools' `map`.

use std::collections::VecDeque;

use lovage_core::TaskError;

use crate::handle::TaskHandle;

/// The per-item results of one chunk.
pub(crate) type ChunkResults<R> = Vec<Result<R, TaskError>>;

/// Reads `items` in chunks, keeps at most `window` chunks in flight through `submit`, and yields
/// the results in input order.
pub(crate) struct OrderedChunks<I: Iterator, S, R> {
    items: I,
    chunksize: usize,
    window: usize,
    submit: S,
    in_flight: VecDeque<(usize, TaskHandle<ChunkResults<R>>)>,
    current: std::vec::IntoIter<Result<R, TaskError>>,
}

impl<I, S, R> OrderedChunks<I, S, R>
where
    I: Iterator,
    S: FnMut(Vec<I::Item>) -> TaskHandle<ChunkResults<R>>,
    R: Send + 'static,
{
    pub(crate) fn new(items: I, chunksize: usize, window: usize, submit: S) -> Self {
        let mut me = OrderedChunks {
            items,
            chunksize: chunksize.max(1),
            window: window.max(1),
            submit,
            in_flight: VecDeque::new(),
            current: Vec::new().into_iter(),
        };
        me.fill();
        me
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.window {
            let chunk: Vec<I::Item> = self.items.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            self.in_flight.push_back((n, (self.submit)(chunk)));
        }
    }
}

impl<I, S, R> Iterator for OrderedChunks<I, S, R>
where
    I: Iterator,
    S: FnMut(Vec<I::Item>) -> TaskHandle<ChunkResults<R>>,
    R: Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(r);
            }
            let (n, handle) = self.in_flight.pop_front()?;
            self.fill();
            self.current = match handle.result() {
                Ok(results) => results.into_iter(),
                // The whole chunk failed (cancelled, or its process died): each item gets the error.
                Err(e) => (0..n)
                    .map(|_| Err(e.clone()))
                    .collect::<Vec<_>>()
                    .into_iter(),
            };
        }
    }
}
