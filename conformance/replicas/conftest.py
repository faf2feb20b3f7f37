"""The multi-replica suite: clusters of stowage replicas on one shared store with Redis locks
and cache (`start_cluster` in harness/fixtures.py). When `STOWAGE_SMOL_BIN` is set, replicas
alternate between the two server binaries."""

pytest_plugins = ["harness.fixtures"]
