"""What the report says, as a list of blocks that Markdown and HTML both render.

Every number comes from the result rows (as in results.csv) and the stored
study definition; every verdict is computed by :mod:`dropscale.study.analysis`.

Blocks are plain tuples:

- ``("h1" | "h2", text)``
- ``("p", text)`` (``**bold**`` is the only markup)
- ``("ul", [text, ...])``
- ``("table", header, rows)`` with every cell a string
- ``("img", alt, filename)``
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dropscale.moments import moments
from dropscale.study.analysis import (
    Interval,
    best_eval_scale,
    format_interval,
    mc_curve,
    mean_or_spread,
    preliminary_note,
    summarise,
    sweep_curve,
    verdicts,
)
from dropscale.study.bnshift import (
    AFTER,
    BEFORE,
    bn_shift_summary,
    order_comparison,
)

__all__ = [
    "Block",
    "bn_shift_blocks",
    "language_model_blocks",
    "site_ratio_rows",
    "study_blocks",
]

Row = Mapping[str, Any]
Block = tuple


def _iv(iv: Interval, scale: float = 1.0, digits: int = 2, sign: bool = False) -> str:
    """Mean [interval]; ``scale`` 100 without ``sign`` is an accuracy in
    percent, whose displayed interval is clipped to [0, 100]."""
    bounds = (0.0, 1.0) if scale == 100.0 and not sign else None
    return format_interval(iv, scale, digits, sign=sign, bounds=bounds)


def _n_sites(rows: Sequence[Row]) -> int:
    n = 0
    while f"site{n}_train_out_mean" in rows[0]:
        n += 1
    return n


def site_ratio_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Measured and exact eval/train ratios of mean and std per (scaling, p, site).

    Measured: ``eval_out / train_out`` of the site's output on the test set,
    averaged over seeds. Exact: :func:`dropscale.moments` for an input with
    the mean and std measured at the site's input in eval mode. At the first
    site the input is the same in both modes, so the two must agree up to
    sampling noise; deeper sites see inputs already changed by earlier
    dropout in training mode.
    """
    acc: dict[tuple[str, float, int], list[list[float]]] = defaultdict(list)
    for r in rows:
        for i in range(_n_sites(rows)):

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
    for (s, p, i), vals in acc.items():
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
    order = list(dict.fromkeys(str(r["scaling"]) for r in rows))
    out.sort(key=lambda d: (order.index(d["scaling"]), d["p"], d["site"]))
    return out


def _definition(d: Mapping[str, Any], rows: Sequence[Row]) -> list[str]:
    seeds = sorted({int(r["seed"]) for r in rows})
    opts = json.dumps(d.get("model_options", {}), sort_keys=True)
    dopts = json.dumps(d.get("dataset_options", {}), sort_keys=True)
    items = []
    if d.get("description"):
        items.append(f"study: {d['description']}")
    items += [
        f"data: {d['dataset']} {dopts}",
        f"model: {d['model']} {opts}; dropout sites: {_n_sites(rows)}",
        f"conventions: {', '.join(d['scalings'])}",
        f"drop probabilities p: {', '.join(f'{p:g}' for p in d['ps'])}",
        f"seeds: {d['seeds']} defined, {len(seeds)} finished",
        f"training: {d['optimizer']} (lr {d['lr']:g}), {d['epochs']} epochs, "
        f"batch size {d['batch_size']}; the same optimiser, learning rate and "
        "epochs for every convention",
        f"inference variants: own rule; eval scale c in "
        f"{{{', '.join(f'{c:g}' for c in d['eval_scales'])}}} and the "
        f"std-matching c per site (calibrated on {d['calibration_examples']} "
        "training inputs); MC dropout with T in "
        f"{{{', '.join(str(t) for t in d['mc_samples'])}}}",
        "pairing: at a given seed every convention starts from the same "
        "weights, sees the batches in the same order and draws its masks from "
        "the same stream",
    ]
    if "val_ppl" in rows[0]:
        o = d.get("model_options", {})
        items.append(
            "language-model recipe: the batch size is the number of parallel "
            "training streams; hidden state carried across windows and "
            f"detached, {'variable' if o.get('variable_bptt', True) else 'fixed'} "
            f"window lengths around {d.get('dataset_options', {}).get('window')} "
            f"tokens, gradient norm clipped at {o.get('clip')}, validation "
            f"every {o.get('eval_every')} steps and at each epoch's end, the "
            "best-validation weights kept"
            + (
                f"; SGD without momentum, averaging the weights once validation "
                f"has not improved for {o.get('nonmono')} checks"
                if d["optimizer"] == "sgd"
                else ""
            )
        )
    if d["optimizer"] == "sgd":
        items.append(
            "note: with SGD a rule that rescales activations also rescales the "
            "effective learning rate, so part of any gap is a learning-rate effect"
        )
    return items


def study_blocks(
    rows: Sequence[Row],
    definition: Mapping[str, Any],
    *,
    wall_seconds: float,
    group_seconds: float,
    figures: Mapping[str, str],
    code_version: str = "",
) -> list[Block]:
    """The report as blocks. ``figures`` maps a figure key (``accuracy``,
    ``nll``, ``eval_scale``, ``mc``) to its PNG file name."""
    if not rows:
        raise ValueError("report: the ledger holds no finished trials yet")
    d = definition
    n_seeds = len({int(r["seed"]) for r in rows})
    scalings = list(dict.fromkeys(str(r["scaling"]) for r in rows))
    ps = sorted({float(r["p"]) for r in rows})
    expected = len(d["scalings"]) * len(d["ps"]) * d["seeds"]
    blocks: list[Block] = [("h1", "dropscale study"), ("h2", "Study definition")]
    blocks.append(("ul", _definition(d, rows)))
    if len(rows) < expected:
        blocks.append(
            (
                "p",
                f"**Incomplete:** {len(rows)} of {expected} trials have finished; "
                "run the same command again to resume.",
            )
        )

    # ---- verdict: which rule wins
    blocks += [
        ("h2", "Verdict: which rule gives the better model"),
        (
            "p",
            "Test accuracy under each convention's own inference rule; "
            "intervals are 95 % Student-t intervals over seeds (accuracy "
            "intervals clipped to [0, 100] %), gaps are paired by seed; rules "
            "with the same value at every seed are called tied.",
        ),
        ("ul", [v.sentence(scale=100.0, unit=" points") for v in verdicts(rows)]),
        ("p", "The same for test negative log-likelihood (lower is better):"),
        (
            "ul",
            [
                v.sentence(scale=1.0, unit="", digits=3)
                for v in verdicts(rows, "nll", higher_is_better=False)
            ],
        ),
        ("p", preliminary_note(n_seeds)),
    ]

    # ---- workload sections: perplexity, BatchNorm shift
    blocks += language_model_blocks(rows)
    blocks += bn_shift_blocks(rows)

    # ---- mean or spread
    blocks += _spread_blocks(rows, scalings, n_seeds)

    # ---- tables and curves
    acc = summarise(rows, "accuracy")
    nll = summarise(rows, "nll")
    table = [
        [s, f"{p:g}", _iv(acc[(s, p)], 100), _iv(nll[(s, p)], 1, 3)]
        for s in scalings
        for p in ps
        if (s, p) in acc
    ]
    blocks += [
        ("h2", "Accuracy and NLL against p"),
        (
            "p",
            "Mean [95 % interval] over seeds, own inference rule; accuracy "
            "intervals are clipped to [0, 100] %.",
        ),
        ("table", ["scaling", "p", "test accuracy (%)", "test NLL"], table),
    ]
    for key, alt in (("accuracy", "accuracy vs p"), ("nll", "NLL vs p")):
        if key in figures:
            blocks.append(("img", alt, figures[key]))
    blocks += _sweep_blocks(rows, d, scalings, ps, figures)
    blocks += _mc_blocks(rows, d, scalings, ps, figures)
    blocks += _site_blocks(rows)

    # ---- run time
    per_min = len(rows) / max(wall_seconds, 1e-9) * 60
    batched = sorted({int(r.get("batched", 1)) for r in rows})
    blocks += [
        ("h2", "Run time"),
        (
            "ul",
            [
                f"wall time {wall_seconds:.1f} s for {len(rows)} "
                f"trial{'' if len(rows) == 1 else 's'} "
                f"({per_min:.1f} trials per minute, all runs of this folder "
                "together)",
                f"time inside trial groups: {group_seconds:.1f} s",
                f"trials per batched computation: {', '.join(str(b) for b in batched)}",
                f"code version: {code_version or 'unknown'}",
            ],
        ),
        ("h2", "Known limits"),
        (
            "ul",
            [
                "Intervals are Student-t intervals over seeds; test accuracy is "
                "discrete, so when every seed shows the same difference the "
                "interval has zero width; the verdicts call it degenerate and "
                "judge it by a sign test (separated only with 6 or more "
                "seeds). With fewer than 3 seeds no comparison is called "
                "separated; with 1 seed there is no interval. Accuracy "
                "intervals are clipped to [0, 100] % for display.",
                "The std-matching c is calibrated site by site on training "
                "inputs with one draw of masks; it matches the pooled std of "
                "each site's output, not every unit's.",
                "Site statistics pool all units of a site; the exact ratios use "
                "the pooled input mean and std.",
            ],
        ),
    ]
    return blocks


def _spread_blocks(rows: Sequence[Row], scalings: list[str], n_seeds: int) -> list:
    if "scale_std_accuracy" not in rows[0]:
        return []
    main = "inverted" if "inverted" in scalings else scalings[0]
    found = mean_or_spread(rows, main)
    answers = [v.answer for v in found]
    summary = ", ".join(
        f"{name} at {sum(a == key for a in answers)} of {len(answers)} p values"
        for key, name in (
            ("mean", "mean-matching wins"),
            ("spread", "spread-matching wins"),
            ("undecided", "undecided"),
        )
    )
    blocks: list = [
        ("h2", "Mean or spread?"),
        (
            "p",
            f"The direct test: models trained with {main} dropout are evaluated "
            "with every site's inference factor multiplied by c = 1 (matching "
            "the training mean) and by the measured per-site c that matches the "
            "training std. Differences are std-matching minus mean-matching, "
            "paired by seed (the same trained model).",
        ),
        ("ul", [v.sentence() for v in found]),
        ("p", f"**Summary for {main}:** {summary}. {preliminary_note(n_seeds)}"),
    ]
    table = []
    for s in scalings:
        for v in mean_or_spread(rows, s):
            table.append(
                [
                    s,
                    f"{v.p:g}",
                    ", ".join(f"{c:.3f}" for c in v.std_c),
                    _iv(v.acc_diff, 100, 2, sign=True),
                    _iv(v.nll_diff, 1, 4, sign=True),
                    v.answer,
                ]
            )
    blocks += [
        ("p", "Every convention, the same comparison:"),
        (
            "table",
            [
                "trained with",
                "p",
                "std-matching c per site",
                "accuracy change (points)",
                "NLL change",
                "better",
            ],
            table,
        ),
    ]
    return blocks


def _sweep_blocks(rows, d, scalings, ps, figures) -> list:
    blocks: list = [
        ("h2", "Eval-scale sweep"),
        (
            "p",
            "Every site's inference factor multiplied by c; c = 1 is the "
            "convention's own rule. Best c by mean test accuracy (c = 1, or the "
            "c nearest 1, when several share the best mean; the others are "
            "named as tied), with its accuracy and the accuracy at c = 1.",
        ),
    ]
    table = []
    for s in scalings:
        for p in ps:
            curve = sweep_curve(rows, s, p, d["eval_scales"])
            if not curve:
                continue
            _, best_acc, label = best_eval_scale(curve)
            one = next(a for c, a, _ in curve if c == 1.0)
            table.append([s, f"{p:g}", label, _iv(best_acc, 100), _iv(one, 100)])
    blocks.append(
        ("table", ["scaling", "p", "best c", "accuracy at best c", "at c = 1"], table)
    )
    if "eval_scale" in figures:
        blocks.append(("img", "accuracy vs eval scale c", figures["eval_scale"]))
    return blocks


def _mc_blocks(rows, d, scalings, ps, figures) -> list:
    ts = list(d["mc_samples"])
    blocks: list = [
        ("h2", "Monte-Carlo dropout"),
        (
            "p",
            "Mean test accuracy (%) of the softmax averaged over T passes with "
            "masks drawn, and, last column, MC at the largest T minus the "
            "deterministic rule, paired by seed. Rules that train the same "
            "model (the same training factor a at a seed, such as classic and "
            "none, or every rule at p = 0) draw the same masks, so their MC "
            "curves coincide; the figure gives each rule its own marker and "
            "line style and names the coinciding curves in the panel.",
        ),
    ]
    table = []
    for s in scalings:
        for p in ps:
            curve = mc_curve(rows, s, p, ts)
            if not curve:
                continue
            table.append(
                [s, f"{p:g}"]
                + [f"{a.mean * 100:.2f}" for _, a, _ in curve]
                + [_iv(curve[-1][2], 100, 2, sign=True)]
            )
    blocks.append(
        (
            "table",
            ["scaling", "p", *[f"T={t}" for t in ts], f"T={ts[-1]} - deterministic"],
            table,
        )
    )
    if "mc" in figures:
        blocks.append(("img", "MC dropout accuracy vs T", figures["mc"]))
    return blocks


def _site_blocks(rows: Sequence[Row]) -> list:
    ratios = site_ratio_rows(rows)
    if not ratios:
        return []
    return [
        ("h2", "Train vs inference activations per dropout site"),
        (
            "p",
            "Eval/train ratio of each site's output mean and std on the test "
            "set, measured (mean over seeds) next to the exact value from "
            "dropscale.moments for the site's measured input. Site 0 sees the "
            "same input in both modes; deeper sites see inputs already changed "
            "by earlier dropout, so their exact column describes that site alone.",
        ),
        (
            "table",
            ["scaling", "p", "site", "mean ratio", "exact", "std ratio", "exact"],
            [
                [
                    r["scaling"],
                    f"{r['p']:g}",
                    str(r["site"]),
                    f"{r['mean_ratio']:.4f}",
                    f"{r['mean_ratio_exact']:.4f}",
                    f"{r['std_ratio']:.4f}",
                    f"{r['std_ratio_exact']:.4f}",
                ]
                for r in ratios
            ],
        ),
    ]


def language_model_blocks(rows: Sequence[Row]) -> list[Block]:
    """Validation and test perplexity per (scaling, p), with a paired verdict
    on test perplexity; empty unless the rows carry ``test_ppl``."""
    if not rows or "test_ppl" not in rows[0]:
        return []
    val = summarise(rows, "val_ppl")
    test = summarise(rows, "test_ppl")
    scalings = list(dict.fromkeys(str(r["scaling"]) for r in rows))
    ps = sorted({float(r["p"]) for r in rows})
    table = [
        [s, f"{p:g}", _iv(val[(s, p)], 1, 2), _iv(test[(s, p)], 1, 2)]
        for s in scalings
        for p in ps
        if (s, p) in test
    ]
    found = [
        dataclasses.replace(v, metric="perplexity")
        for v in verdicts(rows, "test_ppl", higher_is_better=False)
    ]
    return [
        ("h2", "Language model: perplexity"),
        (
            "p",
            "Trained by the AWD-LSTM recipe: truncated back-propagation through "
            "time with the hidden state carried across windows and detached, "
            "variable window lengths, gradient-norm clipping, SGD with averaging "
            "after validation stops improving (or Adam), and the weights with "
            "the best validation perplexity kept. Perplexity is exp of the mean "
            "cross-entropy per token over the whole split, state carried; test "
            "perplexity is exp of the test NLL below. Lower is better.",
        ),
        (
            "table",
            ["scaling", "p", "validation perplexity", "test perplexity"],
            table,
        ),
        (
            "p",
            "Which rule gives the lower test perplexity, paired by seed (a gap "
            "is the other rule's perplexity minus the best one's):",
        ),
        ("ul", [v.sentence(scale=1.0, unit="", digits=2) for v in found]),
    ]


def bn_shift_blocks(rows: Sequence[Row]) -> list[Block]:
    """BatchNorm next to dropout: measured against exact variance shift, the
    accuracy it costs, BatchNorm re-estimation with dropout off as the fix,
    and, when the rows hold both orders, dropout before against after
    BatchNorm. Empty unless the rows carry ``bn_recal_accuracy``."""
    found = bn_shift_summary(rows)
    if not found:
        return []
    n_layers = max(len(b.shift) for b in found)
    blocks: list[Block] = [
        ("h2", "BatchNorm and dropout: variance shift and its fix"),
        (
            "p",
            "With dropout before BatchNorm, BatchNorm learns its running "
            "variance on dropout's training output, a^2 q (sigma^2 + p mu^2) per "
            "unit, but sees b^2 sigma^2 at inference. Measured shift: BatchNorm's "
            "input variance at inference over its running variance, pooled over "
            "units; exact: the same ratio from dropscale.moments.batchnorm_shift "
            "at each unit's measured input mean and std (under inverted dropout "
            "q sigma^2 / (sigma^2 + p mu^2)). Layer 1 sees the data through one "
            "dropout only, so it is the clean check; later layers also inherit "
            "the shift of the layers before. The fix re-estimates BatchNorm's "
            "statistics on the training inputs with dropout off; its change in "
            "test accuracy, paired within each trained model, bounds what the "
            "shift cost from above, because re-estimating also replaces running "
            "averages that lag behind the weights; the control with dropout "
            "after BatchNorm, which has no shift, measures that part. Mean "
            "[95 % interval] over seeds.",
        ),
    ]
    shift_rows = [b for b in found if b.shift]
    if shift_rows:
        header = ["order", "scaling", "p"]
        for j in range(1, n_layers + 1):
            header += [f"BN {j} shift measured", f"BN {j} exact"]
        table = []
        for b in shift_rows:
            cells = [b.order, b.scaling, f"{b.p:g}"]
            for j in range(n_layers):
                if j < len(b.shift):
                    m, e = b.shift[j]
                    cells += [_iv(m, 1, 4), _iv(e, 1, 4)]
                else:
                    cells += ["", ""]
            table.append(cells)
        blocks.append(("table", header, table))
    blocks += [
        (
            "table",
            [
                "order",
                "scaling",
                "p",
                "test accuracy (%)",
                "after re-estimation (%)",
                "fix (points, paired)",
                "NLL change (paired)",
            ],
            [
                [
                    b.order,
                    b.scaling,
                    f"{b.p:g}",
                    _iv(b.accuracy, 100),
                    _iv(b.recal_accuracy, 100),
                    _iv(b.fix, 100, 2, sign=True),
                    _iv(b.nll_fix, 1, 4, sign=True),
                ]
                for b in found
            ],
        ),
        ("ul", [b.sentence() for b in found]),
    ]
    orders = {b.order for b in found}
    compared = order_comparison(rows)
    if compared:
        blocks += [
            ("p", "Dropout after BatchNorm against before it, paired by seed:"),
            ("ul", [c.sentence() for c in compared]),
        ]
    elif orders == {BEFORE}:
        blocks.append(
            (
                "p",
                "These rows hold dropout before BatchNorm only, so the gain "
                "above also holds what re-estimation brings without any shift. "
                f"The control, dropout after BatchNorm ({AFTER}), is the "
                "bn-shift-after preset; `python benchmarks/bn_shift_summary.py "
                "BEFORE_DIR AFTER_DIR` puts the two studies side by side, paired "
                "by seed, and separates the part of the gain owed to the shift.",
            )
        )
    return blocks
