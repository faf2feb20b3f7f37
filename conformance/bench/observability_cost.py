"""What metrics, the access log and traces cost a pull: manifest GET and 1 KiB blob GET under
32 connections, on servers that differ only in their `[observability]`, in one run on this
machine (config_cost.py measures).

- off: no metrics, no access log (the baseline).
- metrics, log: one of them alone.
- on: both, the default.
- traced: both, and every request traced to a collector (`sampling_rate = 1.0`).
- sampled: both, and 1 request in 100 traced (`sampling_rate = 0.01`).

The collector is conformance/harness/otlp_receiver.py in this process, taking each export
without decoding it. Targets (issue 20): on and sampled keep >= 0.9x off's req/s.

    .venv/bin/python conformance/bench/observability_cost.py [--stowage-bin PATH ...] [--rounds N]
"""

import sys
from config_cost import Configuration, measure, run

from harness.otlp_receiver import OtlpReceiver

NO_METRICS = "[observability.metrics]\nenabled = false\n"
NO_ACCESS_LOG = "[observability.log]\naccess_log = false\n"
TARGETS = {"on": 0.9, "sampled": 0.9}


def tracing(collector: OtlpReceiver, rate: float) -> str:
    return f'[observability.tracing]\nendpoint = "{collector.url}"\nsampling_rate = {rate}\n'


def measure_binary(binary: str, rounds: int, seconds: int) -> dict:
    collector = OtlpReceiver(keep=False).start()
    variants = (
        ("off", NO_METRICS + NO_ACCESS_LOG),
        ("metrics", NO_ACCESS_LOG),
        ("log", NO_METRICS),
        ("on", ""),
        ("traced", tracing(collector, 1.0)),
        ("sampled", tracing(collector, 0.01)),
    )
    try:
        return measure(binary, rounds, seconds, lambda work: (
            Configuration(name, binary, work, toml) for name, toml in variants))
    finally:
        collector.stop()


if __name__ == "__main__":
    sys.exit(run(__doc__, measure_binary, "off", TARGETS))
