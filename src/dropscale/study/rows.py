"""Result rows: one flat dict per trial, as written to ``results.csv``.

A row holds the trial's full configuration, its metrics and its per-site
statistics (``site<i>_<field>``), so every table, figure and verdict of the
report can be recomputed from the CSV alone.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["csv_text", "ledger_rows", "read_csv"]

_FIRST = ("accuracy", "nll", "train_loss")


def ledger_rows(
    records: Sequence[Mapping[str, Any]], definition: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Flatten ledger records (see :meth:`Ledger.results`) into CSV rows."""
    rows = []
    for rec in records:
        row: dict[str, Any] = {
            "dataset": definition["dataset"],
            "dataset_options": json.dumps(
                definition["dataset_options"], sort_keys=True
            ),
            "model": definition["model"],
            "model_options": json.dumps(definition["model_options"], sort_keys=True),
            "scaling": rec["scaling"],
            "p": rec["p"],
            "seed": rec["seed"],
            "epochs": definition["epochs"],
            "batch_size": definition["batch_size"],
            "optimizer": definition["optimizer"],
            "lr": definition["lr"],
        }
        metrics = rec["metrics"]
        for key in _FIRST:
            row[key] = metrics[key]
        for key in sorted(metrics, key=_metric_order):
            if key not in _FIRST:
                row[key] = metrics[key]
        for i, site in enumerate(rec["sites"]):
            for k, v in site.items():
                row[f"site{i}_{k}"] = v
        row["seconds"] = round(rec["seconds"], 4)
        row["batched"] = rec["batched"]
        row["group_id"] = rec["group_id"]
        row["code_version"] = rec["code_version"]
        rows.append(row)
    return rows


def _metric_order(key: str) -> tuple:
    parts = key.split("_")
    if parts[0] in ("scale", "mc") and len(parts) == 3:
        try:
            return (parts[0], float(parts[1]), parts[2])
        except ValueError:
            return (parts[0], float("inf"), parts[2])
    return (key, 0.0, "")


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV text (header from the union of keys, first-seen order)."""
    fields: dict[str, None] = {}
    for r in rows:
        fields.update(dict.fromkeys(r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv (values as strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
