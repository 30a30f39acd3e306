//! The one worker pool of the repository: a fixed number of threads take
//! the next item of a list until it is done or one item fails. Each thread
//! has its own state (a zstd context, a buffer), so the hot path shares
//! nothing but an index counter. Memory stays bounded by threads × state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `work` on every item with `threads` workers; stops early and returns
/// the first error when an item fails.
pub fn for_each<T, S, E>(
    items: &[T],
    threads: usize,
    state: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> Result<(), E> + Sync,
) -> Result<(), E>
where
    T: Sync,
    E: Send,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(items.len().max(1)) {
            s.spawn(|| {
                let mut st = state();
                while !failed.load(Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = work(&mut st, item) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_item_once_and_stops_on_error() {
        let items: Vec<u64> = (0..1000).collect();
        let sum = std::sync::atomic::AtomicU64::new(0);
        for_each(
            &items,
            4,
            || (),
            |_, i| {
                sum.fetch_add(*i, Ordering::Relaxed);
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        assert_eq!(sum.into_inner(), 999 * 1000 / 2);
        let err = for_each(
            &items,
            2,
            || (),
            |_, i| if *i == 500 { Err(*i) } else { Ok(()) },
        );
        assert_eq!(err, Err(500));
        assert_eq!(
            for_each(&[] as &[u8], 2, || (), |_, _| Err::<(), _>(())),
            Ok(())
        );
    }
}
