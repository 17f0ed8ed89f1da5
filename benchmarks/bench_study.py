"""Batched study trials against the same trials one at a time in a plain loop.

The grid of a preset (default ``digits-full``) is cut into the study's trial
groups. For each group, interleaved so that both sides see the same machine
load:

- batched: dropscale's engine trains the group as one stacked computation
  and measures each model under its own inference rule (the eval-scale sweep
  and MC dropout are switched off here so both sides do the same work);
- plain: every trial of the group alone, a ``torch.nn.Sequential`` MLP with
  ``torch.nn.Dropout`` (inverted) followed by a constant rescale to the
  trial's convention (train ``a q``, eval ``b``), Adam, the same
  initialisation (same seed, same layer order) and batch order.

Printed: wall time per side, the ratio plain / batched (target >= 3), and the
mean test accuracy per (convention, p) on both sides with the paired
difference over seeds (overall: one mean difference per seed, since
trials sharing a seed are not independent); masks differ between the sides
(PyTorch's global random stream against dropscale's per-trial streams), so
accuracies agree in distribution, not bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/bench_study.py [--preset digits-full]
        [--groups N] [--full-engine]

``--full-engine`` also times the batched engine with every inference variant
(sweep, std matching, MC dropout up to T = 100) for reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from dropscale.scaling import get_scaling
from dropscale.study import load_preset, run_group
from dropscale.study.analysis import interval
from dropscale.study.trial import load_data


class Rescale(nn.Module):
    """Multiply by ``train`` in training mode and ``eval`` in eval mode."""

    def __init__(self, train: float, eval: float) -> None:
        super().__init__()
        self.train_factor, self.eval_factor = train, eval

    def forward(self, x):
        return x * (self.train_factor if self.training else self.eval_factor)


def plain_trial(config, data, trial) -> float:
    """One trial in a plain loop; returns its test accuracy."""
    q = 1.0 - trial.p
    a, b = get_scaling(trial.scaling).factors(q)
    torch.manual_seed(trial.init_seed)
    layers: list[nn.Module] = []
    width = data.n_features
    for h in config.model_options["hidden"]:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(trial.p)]
        if (a * q, b) != (1.0, 1.0):
            layers.append(Rescale(a * q, b))
        width = h
    layers.append(nn.Linear(width, data.n_classes))
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(trial.order_seed)
    n = data.x_train.shape[0]
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)
    return (pred == data.y_test).double().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="digits-full")
    ap.add_argument("--groups", type=int, default=0, help="only the first N groups")
    ap.add_argument("--full-engine", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    full = load_preset(args.preset)
    lean = full.with_overrides(
        eval_scales=(1.0,), mc_samples=(1,), calibration_examples=16
    )
    data = load_data(full)
    groups = lean.groups()
    if args.groups:
        groups = groups[: args.groups]
    n_trials = sum(len(g) for g in groups)
    print(
        f"{args.preset}: {n_trials} trials in {len(groups)} groups of up to "
        f"{lean.group_size}; MLP {full.model_options['hidden']}, "
        f"{full.epochs} epochs, batch {full.batch_size}, 1 thread"
    )
    run_group(lean, groups[0][:2], data)  # warm up kernels and the sampler
    t_batched = t_plain = t_full = 0.0
    acc_b: dict[tuple[str, float, int], float] = {}
    acc_p: dict[tuple[str, float, int], float] = {}
    for gi, group in enumerate(groups):
        start = time.perf_counter()
        for r in run_group(lean, group, data):
            acc_b[(r.trial.scaling, r.trial.p, r.trial.seed)] = r.accuracy
        t_batched += time.perf_counter() - start
        start = time.perf_counter()
        for t in group:
            acc_p[(t.scaling, t.p, t.seed)] = plain_trial(full, data, t)
        t_plain += time.perf_counter() - start
        if args.full_engine:
            start = time.perf_counter()
            run_group(full, group, data)
            t_full += time.perf_counter() - start
        print(
            f"  group {gi + 1}/{len(groups)}: batched {t_batched:7.1f} s, "
            f"plain {t_plain:7.1f} s so far",
            flush=True,
        )
    print(f"batched (train + own-rule test): {t_batched:.1f} s")
    print(f"plain nn.Dropout loop, one trial at a time: {t_plain:.1f} s")
    print(f"ratio plain / batched: {t_plain / t_batched:.2f}x (target >= 3x)")
    if args.full_engine:
        print(
            f"batched with every inference variant (sweep, std-c, MC to "
            f"T={max(full.mc_samples)}): {t_full:.1f} s, "
            f"{n_trials / t_full * 60:.0f} trials per minute"
        )
    print("test accuracy (%), mean over seeds; paired difference batched - plain")
    keys = sorted({(s, p) for s, p, _ in acc_b})
    diffs_all = []
    for s, p in keys:
        seeds = sorted(k[2] for k in acc_b if k[:2] == (s, p))
        b = [acc_b[(s, p, i)] for i in seeds]
        pl = [acc_p[(s, p, i)] for i in seeds]
        d = [x - y for x, y in zip(b, pl, strict=True)]
        diffs_all += d
        iv = interval(d)
        print(
            f"  {s:<9} p={p:<4g} batched {statistics.mean(b) * 100:6.2f}  "
            f"plain {statistics.mean(pl) * 100:6.2f}  diff {iv.mean * 100:+.2f} "
            f"[{iv.low * 100:+.2f}, {iv.high * 100:+.2f}]"
        )
    # Trials sharing a seed share initialisation, batch order and masks (and
    # classic and none train the very same model), so they are not
    # independent: the unit of the overall comparison is the seed.
    per_seed = [
        statistics.mean(acc_b[k] - acc_p[k] for k in acc_b if k[2] == seed)
        for seed in sorted({k[2] for k in acc_b})
    ]
    iv = interval(per_seed)
    verdict = "agree" if iv.low <= 0.0 <= iv.high else "DIFFER"
    print(
        f"all trials, mean difference per seed over {len(per_seed)} seeds: "
        f"{iv.mean * 100:+.3f} points [{iv.low * 100:+.3f}, {iv.high * 100:+.3f}]"
        f": accuracies {verdict} (pooled over trials: "
        f"{statistics.mean(diffs_all) * 100:+.3f} points)"
    )


if __name__ == "__main__":
    main()
