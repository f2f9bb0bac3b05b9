//! Runs blob transfers a few at a time on scoped threads; the first error stops the rest from
//! starting new work and is the one reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::ClientError;

pub(crate) fn for_each<T: Sync>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> Result<(), ClientError> + Sync,
) -> Result<(), ClientError> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<ClientError>> = Mutex::new(None);
    let failed = || failure.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                while !failed() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = work(item) {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
