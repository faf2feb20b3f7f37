"""Runs the OCI conformance runner against every server binary on every storage layout:
both stores on the filesystem, both on S3, and each split. Prints one line per cell and a
closing `N passed, N failed` over the cells."""

import argparse
import subprocess
import sys

from services import Registry, S3Server, fs_toml, remove, scratch_dir

LAYOUTS = ["fs", "s3", "s3-blobs+fs-meta", "fs-blobs+s3-meta"]


def stores_for(layout: str, work, s3: S3Server | None) -> str:
    def store(table: str, kind: str) -> str:
        if kind == "fs":
            return fs_toml(table, work / table)
        return s3.store_toml(table, s3.new_bucket())

    blobs, meta = {
        "fs": ("fs", None),
        "s3": ("s3", None),
        "s3-blobs+fs-meta": ("s3", "fs"),
        "fs-blobs+s3-meta": ("fs", "s3"),
    }[layout]
    toml = store("blob_store", blobs)
    if meta:
        toml += store("metadata_store", meta)
    return toml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runner", required=True)
    parser.add_argument("--bin", action="append", required=True, help="server binary (repeat)")
    parser.add_argument("--layout", action="append", choices=LAYOUTS)
    args = parser.parse_args()
    layouts = args.layout or LAYOUTS

    work = scratch_dir("stowage-matrix-")
    s3 = S3Server(work) if any("s3" in l for l in layouts) else None
    passed = failed = 0
    try:
        for binary in args.bin:
            for layout in layouts:
                cell = f"{binary.rsplit('/', 1)[-1]} x {layout}"
                cell_dir = work / f"{passed + failed}"
                registry = Registry(binary, cell_dir, stores_for(layout, cell_dir, s3))
                try:
                    run = subprocess.run(
                        [args.runner, "--url", registry.url],
                        capture_output=True,
                        text=True,
                    )
                finally:
                    registry.stop()
                summary = run.stdout.strip().splitlines()[-1:] or ["no output"]
                if run.returncode == 0:
                    passed += 1
                    print(f"PASS {cell}: {summary[0]}", flush=True)
                else:
                    failed += 1
                    failures = [l for l in run.stdout.splitlines() if l.startswith("FAIL")]
                    print(f"FAIL {cell}: {summary[0]}", flush=True)
                    for line in failures:
                        print(f"    {line}")
                    print(registry.process.tail())
    finally:
        if s3:
            s3.stop()
        remove(work)
    print(f"matrix: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
