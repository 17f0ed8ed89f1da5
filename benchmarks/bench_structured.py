"""Overhead of the structured dropouts against their plain counterparts.

Prints, for each pair, the median time of one training step (forward and
backward) and the ratio structured / plain. The two sides are timed in
alternation within one run, so machine load affects both alike; the ratio is
the figure to read, not the absolute times.

    OMP_NUM_THREADS=1 python benchmarks/bench_structured.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from dropscale import EmbeddingDropout, RNNDropout, WeightDropout


def _step(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn().sum().backward()
    return time.perf_counter() - start


def compare(name: str, plain, structured, repeats: int) -> None:
    """Time ``plain`` and ``structured`` in alternation; print the medians."""
    for _ in range(3):  # warm-up
        _step(plain)
        _step(structured)
    plain_times, struct_times = [], []
    for _ in range(repeats):
        plain_times.append(_step(plain))
        struct_times.append(_step(structured))
    p_med, s_med = statistics.median(plain_times), statistics.median(struct_times)
    print(
        f"{name:<40} plain {p_med * 1e3:8.2f} ms  structured {s_med * 1e3:8.2f} ms"
        f"  ratio {s_med / p_med:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)

    lstm = nn.LSTM(128, 256, num_layers=2)
    wrapped = WeightDropout(
        nn.LSTM(128, 256, num_layers=2), 0.5, names=("weight_hh_l0", "weight_hh_l1")
    )
    seq = torch.randn(35, 32, 128)
    compare(
        "WeightDropout(LSTM 2x256) vs LSTM",
        lambda: lstm(seq)[0],
        lambda: wrapped(seq)[0],
        args.repeats,
    )

    hidden = torch.randn(32, 35, 256, requires_grad=True)
    plain_drop, locked = nn.Dropout(0.3), RNNDropout(0.3)
    compare(
        "RNNDropout vs nn.Dropout (32x35x256)",
        lambda: plain_drop(hidden),
        lambda: locked(hidden),
        args.repeats,
    )

    emb = nn.Embedding(10_000, 400)
    emb_drop = EmbeddingDropout(nn.Embedding(10_000, 400), 0.1)
    words = torch.randint(0, 10_000, (32, 35))
    compare(
        "EmbeddingDropout vs nn.Embedding (10k x 400)",
        lambda: emb(words),
        lambda: emb_drop(words),
        args.repeats,
    )


if __name__ == "__main__":
    main()
