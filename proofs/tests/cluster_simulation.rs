//! The simulated cluster over many seeds (see `stowage_proofs::sim`). `SIM_SEED=<n>` runs
//! only seed `n`: every failure prints the command that replays it.

use stowage_proofs::sim;

/// Seeds run by default; the runs are independent, so more only cost time.
const SEEDS: u64 = 10_000;

#[test]
fn cluster_simulation() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.trim().parse().expect("SIM_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    let mut failures = Vec::new();
    let mut totals = sim::Summary::default();
    for &seed in &seeds {
        match sim::run(seed) {
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
