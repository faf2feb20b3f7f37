//! Spreading connections over workers that do not steal work from each other (both servers
//! run one single-threaded executor per core): each new connection goes to the worker
//! serving the fewest.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many connections each worker serves.
pub struct Spread {
    serving: Vec<Arc<AtomicUsize>>,
}

/// Counts a connection as served by its worker until dropped.
pub struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// Over `workers` workers, at least one.
    pub fn new(workers: usize) -> Self {
        Spread {
            serving: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.serving.len()
    }

    /// The index of the worker serving the fewest connections, and the count of one more
    /// there, held until the connection ends.
    pub fn pick(&self) -> (usize, Serving) {
        let load = |i: usize| self.serving[i].load(Ordering::Relaxed);
        let index =
            (1..self.workers()).fold(0, |best, i| if load(i) < load(best) { i } else { best });
        self.serving[index].fetch_add(1, Ordering::Relaxed);
        (index, Serving(self.serving[index].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_goes_to_the_worker_serving_the_fewest() {
        let spread = Spread::new(3);
        let held: Vec<(usize, Serving)> = (0..4).map(|_| spread.pick()).collect();
        let workers: Vec<usize> = held.iter().map(|(worker, _)| *worker).collect();
        assert_eq!(
            workers,
            [0, 1, 2, 0],
            "round the workers while they serve as many"
        );
        let mut held = held.into_iter();
        let (_, _zero) = held.next().expect("held");
        let (one, one_serving) = held.next().expect("held");
        drop(one_serving);
        assert_eq!(
            spread.pick().0,
            one,
            "the worker whose connection ended serves the fewest"
        );
        assert_eq!(Spread::new(0).workers(), 1);
    }
}
