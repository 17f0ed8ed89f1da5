"""Summarise a finished ``bn-shift`` (or ``bn-shift-after``) study folder.

Reads ``results.csv`` and prints, per rule and p, with 95 % t-intervals over
seeds: BatchNorm's measured variance shift next to the exact value (first BN
layer, the clean check; second layer for reference), the test accuracy with
the trained BatchNorm statistics, and the paired change from re-estimating
them with dropout off (the fix). With a second folder (the ``bn-shift-after``
control) it adds the paired accuracy difference, after minus before, per rule
and p over the seeds both studies share.

    python benchmarks/bn_shift_summary.py runs/bn-shift [runs/bn-shift-after]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from dropscale.study.analysis import interval
from dropscale.study.rows import read_csv


def _iv(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    iv = interval(values)
    return (
        f"{iv.mean * scale:.{digits}f} [{iv.low * scale:.{digits}f}, "
        f"{iv.high * scale:.{digits}f}]"
    )


def _groups(rows):
    out = defaultdict(dict)
    for r in rows:
        out[(r["scaling"], float(r["p"]))][int(r["seed"])] = r
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("control", type=Path, nargs="?", default=None)
    args = parser.parse_args()
    groups = _groups(read_csv(args.folder / "results.csv"))
    control = _groups(read_csv(args.control / "results.csv")) if args.control else {}
    for (scaling, p), by_seed in sorted(groups.items()):
        rows = list(by_seed.values())
        print(f"{scaling}, p = {p:g} ({len(rows)} seeds)")
        for j in (1, 2):
            key = f"bn{j}_shift_measured"
            if rows[0].get(key):
                measured = [float(r[key]) for r in rows]
                exact = [float(r[f"bn{j}_shift_exact"]) for r in rows]
                print(
                    f"  BN layer {j}: variance shift measured {_iv(measured)}, "
                    f"exact {_iv(exact)}"
                )
        acc = [float(r["accuracy"]) for r in rows]
        fix = [float(r["bn_recal_accuracy"]) - float(r["accuracy"]) for r in rows]
        print(f"  test accuracy (%) {_iv(acc, 100, 2)}")
        print(f"  re-estimating BatchNorm with dropout off: {_iv(fix, 100, 2)} points")
        if (scaling, p) in control:
            other = control[(scaling, p)]
            seeds = sorted(set(by_seed) & set(other))
            diff = [
                float(other[s]["accuracy"]) - float(by_seed[s]["accuracy"])
                for s in seeds
            ]
            print(f"  dropout after BN minus before: {_iv(diff, 100, 2)} points")


if __name__ == "__main__":
    main()
