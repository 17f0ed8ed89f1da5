"""Summarise a finished ``bn-shift`` study, alone or beside its control.

Each study's own report (report.md, report.html) already holds the BatchNorm
section for its rows. This script reads the ``results.csv`` of one or two
folders (``bn-shift``, and optionally the ``bn-shift-after`` control with
dropout after BatchNorm), and prints the same section computed by
:func:`dropscale.study.bnshift.bn_shift_summary` over the rows of both, so the
dropout-before-against-after comparison, paired by seed, appears too.

    python benchmarks/bn_shift_summary.py runs/bn-shift [runs/bn-shift-after]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dropscale.report.content import bn_shift_blocks
from dropscale.report.markdown import to_markdown
from dropscale.study.rows import read_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="study folders")
    args = parser.parse_args()
    rows = [r for folder in args.folders for r in read_csv(folder / "results.csv")]
    blocks = bn_shift_blocks(rows)
    if not blocks:
        raise SystemExit("no BatchNorm re-estimation columns in these results")
    print(to_markdown(blocks))


if __name__ == "__main__":
    main()
