//! Locking a `std::sync::Mutex` whose holder may have panicked: the data behind vantage's
//! locks (counters, caches, recorders) stays consistent between statements, so a poisoned lock
//! is taken over rather than spreading one task's panic to every other task.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking it over if a previous holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = m2.lock().unwrap();
            panic!("holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
