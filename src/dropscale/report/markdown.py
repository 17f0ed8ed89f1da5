"""The Markdown report of a study, built from its result rows alone."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from dropscale.moments import moments
from dropscale.study.analysis import summarise, verdicts

__all__ = ["render_markdown", "site_ratio_rows"]

Row = Mapping[str, object]


def _fmt_iv(iv, scale: float = 1.0, digits: int = 2) -> str:
    if iv.n < 2:
        return f"{iv.mean * scale:.{digits}f} (1 seed)"
    return (
        f"{iv.mean * scale:.{digits}f} "
        f"[{iv.low * scale:.{digits}f}, {iv.high * scale:.{digits}f}]"
    )


def _n_sites(rows: Sequence[Row]) -> int:
    n = 0
    while f"site{n}_train_out_mean" in rows[0]:
        n += 1
    return n


def site_ratio_rows(rows: Sequence[Row]) -> list[dict[str, float | str | int]]:
    """Measured and exact eval/train ratios of mean and std per (scaling, p, site).

    Measured: ``eval_out / train_out`` of the site's output on the test set,
    averaged over seeds. Exact: :func:`dropscale.moments` for an input with
    the mean and std measured at the site's input in eval mode. At the first
    site the input is the same in both modes, so the two must agree; deeper
    sites see inputs already changed by earlier dropout in training mode.
    """
    acc: dict[tuple[str, float, int], list[list[float]]] = defaultdict(list)
    n_sites = _n_sites(rows)
    for r in rows:
        for i in range(n_sites):

            def g(k: str, r: Row = r, i: int = i) -> float:
                return float(r[f"site{i}_{k}"])

            if g("train_out_mean") == 0.0 or g("train_out_std") == 0.0:
                continue
            exact = moments(
                float(r["p"]),
                mean=g("eval_in_mean"),
                std=g("eval_in_std"),
                scaling=str(r["scaling"]),
            )
            acc[(str(r["scaling"]), float(r["p"]), i)].append(
                [
                    g("eval_out_mean") / g("train_out_mean"),
                    exact.mean_ratio,
                    g("eval_out_std") / g("train_out_std"),
                    exact.std_ratio,
                ]
            )
    out = []
    for (s, p, i), vals in sorted(acc.items()):
        m = [sum(col) / len(col) for col in zip(*vals, strict=True)]
        out.append(
            {
                "scaling": s,
                "p": p,
                "site": i,
                "mean_ratio": m[0],
                "mean_ratio_exact": m[1],
                "std_ratio": m[2],
                "std_ratio_exact": m[3],
            }
        )
    return out


def render_markdown(
    rows: Sequence[Row],
    config: Mapping[str, object],
    *,
    seconds: float,
    figures: Mapping[str, str],
) -> str:
    """The report: what ran, the tables, the verdict and the figures.

    Every number is computed from ``rows``; nothing in the verdict is written
    by hand.
    """
    if not rows:
        raise ValueError("render_markdown: no result rows")
    acc = summarise(rows, "accuracy")
    nll = summarise(rows, "nll")
    seeds = sorted({int(r["seed"]) for r in rows})
    scalings = list(dict.fromkeys(str(r["scaling"]) for r in rows))
    ps = sorted({float(r["p"]) for r in rows})
    lines = [
        "# dropscale study",
        "",
        "## What was run",
        "",
        f"- data: {config.get('dataset')}; model: MLP with hidden widths "
        f"{config.get('hidden')}, dropout after every hidden layer",
        f"- conventions: {', '.join(scalings)}; p: {', '.join(f'{p:g}' for p in ps)};"
        f" seeds: {len(seeds)}",
        f"- training: {config.get('optimizer')} (lr {config.get('lr')}), "
        f"{config.get('epochs')} epochs, batch size {config.get('batch_size')}; "
        "the same optimiser, learning rate and epochs for every convention",
        "- pairing: at a given seed every convention starts from the same "
        "weights, sees the batches in the same order and draws the same masks",
        f"- trials: {len(rows)}; wall time {seconds:.1f} s "
        f"({len(rows) / max(seconds, 1e-9) * 60:.0f} trials per minute)",
        "",
        "## Verdict",
        "",
        "Test accuracy under each convention's own inference rule; intervals are "
        "95 % Student-t intervals over seeds, gaps are paired by seed.",
        "",
    ]
    for v in verdicts(rows, "accuracy"):
        lines.append(f"- {v.sentence(scale=100.0, unit=' points')}")
    lines += ["", "The same for test negative log-likelihood (lower is better):", ""]
    for v in verdicts(rows, "nll", higher_is_better=False):
        lines.append(f"- {v.sentence(scale=1.0, unit='', digits=3)}")
    if len(seeds) <= 5:
        lines += [
            "",
            f"With {len(seeds)} seeds these intervals are wide; treat the verdict "
            "as preliminary.",
        ]
    lines += [
        "",
        "## Test accuracy (%) and NLL, mean [95 % interval]",
        "",
        "| scaling | p | accuracy | NLL |",
        "| --- | --- | --- | --- |",
    ]
    for s in scalings:
        for p in ps:
            if (s, p) in acc:
                lines.append(
                    f"| {s} | {p:g} | {_fmt_iv(acc[(s, p)], 100)} | "
                    f"{_fmt_iv(nll[(s, p)], 1, 3)} |"
                )
    for name, path in figures.items():
        lines += ["", f"![{name}]({path})"]
    ratios = site_ratio_rows(rows)
    if ratios:
        lines += [
            "",
            "## Train vs inference activations per dropout site",
            "",
            "Eval/train ratio of each site's output mean and std on the test set, "
            "measured (mean over seeds) next to the exact value from "
            "`dropscale.moments` for the site's measured input. Site 0 sees the "
            "same input in both modes; deeper sites see inputs already changed by "
            "earlier dropout, so their exact column describes that site alone.",
            "",
            "| scaling | p | site | mean ratio | exact | std ratio | exact |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in ratios:
            lines.append(
                f"| {r['scaling']} | {r['p']:g} | {r['site']} | "
                f"{r['mean_ratio']:.4f} | {r['mean_ratio_exact']:.4f} | "
                f"{r['std_ratio']:.4f} | {r['std_ratio_exact']:.4f} |"
            )
    lines.append("")
    return "\n".join(lines)
