//! The simulated cluster over many seeds (see `stowage_proofs::sim`). `SIM_SEED=<n>` runs
//! only seed `n`: every failure prints the command that replays it; `SIM_TRACE=1` with it
//! prints the requests of a run whose end state breaks an invariant. `SIM_SEEDS=<count>`
//! runs that many seeds instead of the default (a longer soak).

use stowage_proofs::sim;

/// Seeds run by default; the runs are independent, so more only cost time.
const SEEDS: u64 = 10_000;

#[test]
fn cluster_simulation() {
    run_seeds(sim::run);
}

/// The same with a garbage collector among the replicas in half the seeds (docs/gc.md):
/// no acknowledged, undeleted manifest names a missing blob, and every other invariant
/// holds with the collector deleting beside the pushes.
#[test]
fn cluster_simulation_with_collector() {
    run_seeds(sim::run_with_collector);
}

fn run_seeds(run: fn(u64) -> Result<sim::Summary, sim::Violation>) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.trim().parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("SIM_SEEDS").map_or(SEEDS, |count| {
                count.trim().parse().expect("SIM_SEEDS is a number")
            });
            (0..count).collect()
        }
    };
    let mut failures = Vec::new();
    let mut totals = sim::Summary::default();
    for &seed in &seeds {
        match run(seed) {
            Ok(summary) => {
                totals.requests += summary.requests;
                totals.acknowledged += summary.acknowledged;
                totals.crashes += summary.crashes;
                totals.injected += summary.injected;
            }
            Err(violation) => failures.push(format!(
                "seed {seed}: {violation}\n  replay: {}",
                sim::replay_command(seed)
            )),
        }
    }
    println!(
        "{} seeds: {} requests, {} acknowledged, {} crashes, {} injected faults",
        seeds.len(),
        totals.requests,
        totals.acknowledged,
        totals.crashes,
        totals.injected
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds broke an invariant:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}
