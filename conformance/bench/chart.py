"""Turns registry_bench.py's JSON into docs/bench.png (how many times better than
Distribution each figure is, against its target) and docs/bench.md (the tables, between its
`bench:begin` and `bench:end` markers, keeping the run history around them), and puts
the tables into README.md between the `bench:begin` and `bench:end` markers.

    .venv/bin/python conformance/bench/chart.py docs/bench.json
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from registry_bench import crowd_ceiling_text, fmt, verified_write_text  # noqa: E402  (this folder is on the path: a script's own)

REPO = Path(__file__).resolve().parents[2]
MARKERS = ("<!-- bench:begin -->", "<!-- bench:end -->")
COLOURS = {True: "#2e7d32", False: "#c62828", None: "#78909c"}


def advantage(row: dict, value: float | None) -> float | None:
    """A ratio turned so that above 1 is always Stowage doing better."""
    if value is None or value == 0:
        return None
    return 1 / value if row["lower_is_better"] else value


def tables(result: dict):
    """(backend, stowage binary, rows) in the order they were measured."""
    for backend, measured in result["backends"].items():
        for stowage, rows in measured["tables"].items():
            yield backend, stowage, rows


HATCHES = ["", "///", "...", "xx"]


def draw(result: dict, out: Path) -> None:
    """One panel per backend, one row per figure, one bar per Stowage binary, growing from 1x
    (as good as Distribution) to the right when Stowage does better."""
    backends = result["backends"]
    labels = {}  # figure key -> label, in the order measured; the same y in every panel
    for _, _, rows in tables(result):
        for row in rows:
            labels.setdefault(row["key"], row["figure"])
    keys = list(labels)
    binaries = list(next(iter(backends.values()))["tables"])
    bar = 0.8 / len(binaries)
    fig, axes = plt.subplots(1, len(backends), figsize=(8 * len(backends), len(keys) * 0.26 * len(binaries) + 2),
                             squeeze=False, sharey=True)
    for ax, (backend, measured) in zip(axes[0], backends.items()):
        for b, stowage in enumerate(measured["tables"]):
            for row in measured["tables"][stowage]:
                y = keys.index(row["key"]) - 0.4 + bar * (b + 0.5)
                value = advantage(row, row["ratio"])
                if value is None:
                    ax.text(1, y, "  failed", va="center", color=COLOURS[False], fontsize=7)
                    continue
                ax.barh(y, value - 1, left=1, height=bar * 0.9, color=COLOURS[row["met"]],
                        hatch=HATCHES[b % len(HATCHES)], edgecolor="white", linewidth=0)
                ax.text(max(value, 1), y, f" {value:.0f}x" if value >= 10 else f" {value:.2g}x", va="center", fontsize=6)
                target = advantage(row, row["target_ratio"])
                if target is not None:
                    ax.plot([target, target], [y - bar / 2, y + bar / 2], color="black", linewidth=1.5)
        ax.set_xscale("log")
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xlabel("times better than Distribution (log scale; black tick: target)", fontsize=8)
        ax.set_title(f"{backend}", fontsize=10)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_yticks(range(len(keys)), [labels[k] for k in keys], fontsize=7)
    axes[0][0].invert_yaxis()  # once: the panels share it
    if len(binaries) > 1:
        handles = [matplotlib.patches.Patch(facecolor="#b0bec5", hatch=HATCHES[b % len(HATCHES)], label=name)
                   for b, name in enumerate(binaries)]
        axes[0][-1].legend(handles=handles, fontsize=8, loc="lower right")
    meta = result["meta"]
    fig.suptitle(
        f"Stowage / {meta['distribution']}, {meta['cpu']} x{meta['cores']}, commit {meta['commit']}, "
        f"{meta['date'][:10]}\ngreen: target met, red: missed, grey: no target",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def preamble(result: dict) -> list[str]:
    meta, machine = result["meta"], result["machine"]
    ceiling = machine["client_ceiling"]
    load = meta["load_average_start"][0], meta.get("load_average_end", [float("nan")])[0]
    return [
        f"Stowage vs {meta['distribution']}, measured side by side on one machine "
        f"({meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, Linux {meta['kernel']}), "
        f"commit `{meta['commit']}`, {meta['date']}{' (--quick)' if meta['quick'] else ''}. "
        f"Load average {load[0]:.2f} at the start, {load[1]:.2f} at the end: where other work shared "
        "the machine, the figures are indicative only.",
        "",
        f"Machine limits in the same run: sha256 on one core {fmt(machine['sha256_one_core_mib_s'])} MiB/s, "
        f"loopback socket copy {fmt(machine['loopback_copy_mib_s'])} MiB/s. The benchmark client against "
        f"a server that does nothing: push {fmt(ceiling['push_mib_s'])} MiB/s, pull "
        f"{fmt(ceiling['pull_mib_s'])} MiB/s, small blobs {fmt(ceiling['small_blobs_s'])}/s"
        f"{crowd_ceiling_text(ceiling)}. "
        f"{verified_write_text(result)}".rstrip(),
        "",
        "Before every timed push the page cache was flushed"
        + (" and dropped" if meta.get("page_cache_dropped_before_pushes") else " (not dropped: not run as root)")
        + ", so each push started from the same memory state.",
    ]


def target_text(row: dict) -> str:
    return row["target"].replace(">=", "≥").replace("<=", "≤")


def markdown(result: dict, chart: str) -> str:
    """Every table: figure, stowage, Distribution, ratio, target, met?"""
    lines = preamble(result) + ["", f"![Stowage / Distribution per figure]({chart})"]
    for backend, stowage, rows in tables(result):
        lines += ["", f"**{backend}: {stowage} / Distribution**", "",
                  "| figure | stowage | Distribution | ratio | target | met? |", "|---|--:|--:|--:|---|:-:|"]
        for r in rows:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            lines.append(f"| {r['figure']} | {fmt(r['stowage'])} | {fmt(r['distribution'])} | {ratio} "
                         f"| {target_text(r)} | {met} |")
        errors = sorted({r["error"] for r in rows if r["error"]})
        lines += [f"\nFailed: `{e[:300]}`" for e in errors]
    return "\n".join(lines) + "\n"


def summary_markdown(result: dict, chart: str, details: str) -> str:
    """The README's short form: the figures that have a target, one column of ratios per
    backend and binary."""
    columns = [(f"{backend} {stowage}", {r["key"]: r for r in rows}) for backend, stowage, rows in tables(result)]
    keys = {}
    for _, rows in columns:
        for key, row in rows.items():
            if row["target"]:
                keys.setdefault(key, row)
    lines = preamble(result) + [
        "",
        f"![Stowage / Distribution per figure]({chart})",
        "",
        f"Stowage / Distribution for each figure with a target (✓ met, ✗ missed); values in [{details}]({details}).",
        "",
        "| figure | target | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|" + "--:|" * len(columns),
    ]
    for key, first in keys.items():
        cells = []
        for _, rows in columns:
            row = rows.get(key)
            if row is None or row["met"] is None:
                cells.append("")
            elif row["ratio"] is None:
                cells.append("failed ✗")
            elif row["target_ratio"] is None:  # a bound on Stowage's own figure alone
                cells.append(f"{fmt(row['stowage'])} {'✓' if row['met'] else '✗'}")
            else:
                cells.append(f"{row['ratio']:.2f} {'✓' if row['met'] else '✗'}")
        lines.append(f"| {first['figure']} | {target_text(first)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_block(path: Path, body: str) -> bool:
    """Rewrites the text between the markers, if the file has them."""
    text = path.read_text()
    begin, end = (re.escape(m) for m in MARKERS)
    if not re.search(f"{begin}.*{end}", text, re.S):
        return False
    path.write_text(re.sub(f"{begin}.*{end}", lambda _: f"{MARKERS[0]}\n{body}{MARKERS[1]}", text, flags=re.S))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="JSON from registry_bench.py --out")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "bench.png")
    parser.add_argument("--md", type=Path, default=REPO / "docs" / "bench.md")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args()
    result = json.loads(args.results.read_text())
    draw(result, args.png)
    chart_from = lambda page: os.path.relpath(args.png, page.parent)  # noqa: E731
    tables = markdown(result, chart_from(args.md))
    # The tables go between the markers, so the run history written around them stays.
    if not (args.md.exists() and replace_block(args.md, tables)):
        args.md.write_text(f"# Benchmark: Stowage vs CNCF Distribution\n\n{MARKERS[0]}\n{tables}{MARKERS[1]}\n")
    print(f"wrote {args.png} and {args.md}")
    summary = summary_markdown(result, chart_from(args.readme), os.path.relpath(args.md, args.readme.parent))
    if replace_block(args.readme, summary):
        print(f"updated the benchmark block in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
