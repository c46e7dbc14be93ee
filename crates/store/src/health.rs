//! What both backends keep to answer [`EventStore::health`](crate::EventStore::health)
//! without a round trip: operations failed in a row, and the last failure's words.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::StoreError;

/// The last failure's message, for the `Unhealthy` text. A backend may count failures in
/// a row in more than one counter (SQLite counts reads apart from writes) and keep one
/// message for all of them.
#[derive(Debug, Default)]
pub(crate) struct LastFailure(Mutex<Option<String>>);

// === impl LastFailure ===

impl LastFailure {
    /// Counts `result` in `in_a_row` (a success resets it, a failure raises it and is
    /// kept as the last failure) and passes it on.
    pub(crate) fn observe<T>(
        &self,
        in_a_row: &AtomicU32,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => in_a_row.store(0, Ordering::Relaxed),
            Err(error) => {
                in_a_row.fetch_add(1, Ordering::Relaxed);
                *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
            }
        }
        result
    }

    /// The last failure's message; empty when nothing failed yet.
    pub(crate) fn message(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }
}
