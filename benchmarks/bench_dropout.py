"""Dropout speed and memory: dropscale's hash sampler against PyTorch's dropout.

One command, every figure measured side by side in the same run with the two
sides interleaved (other jobs may share the cores, so single timings are
noisy; each figure is the median of several interleaved rounds):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dropout.py

1. Throughput of forward + backward through ``dropscale.Dropout(p=0.5)`` in
   training, for every rule, against ``torch.nn.Dropout(p=0.5)``; float32,
   2^20 and 2^24 elements, 1 and 2 threads; the copy speed of the same tensor
   (``x.clone()``) for context. Target: ratio >= 4.
2. Peak memory of one forward + backward at 2^24 elements, each side in a
   fresh subprocess (growth of the peak resident set over the inputs; Linux).
   Target: dropscale <= torch.
3. The default ``dropscale study`` end to end, with dropscale's masks and with
   PyTorch's (``bernoulli_``, as ``torch.nn.functional.dropout`` draws them on
   the CPU) patched into the same models, and with free masks (all kept, no
   draws: the bound for any sampler). Target: ratio >= 1.5.
   ``--skip-study`` leaves it out; ``--study-rounds`` repeats it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

import dropscale
from dropscale import _sampler
from dropscale.scaling import scaling_names

RULES = [name for name in scaling_names() if not name.startswith("custom")]


def _fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    x.grad = None
    layer(x).backward(g)


def _median_times(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, calling them in turn each round.

    The order is shuffled (seeded) every round, so no fn always runs right
    after the same other one: what a call leaves behind (the allocator's
    state, PyTorch's threads still spinning) slows the next one.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    order = random.Random(0)
    for fn in fns.values():
        fn()  # warm up (and compile the kernels once)
    for _ in range(rounds):
        order.shuffle(names)
        for name in names:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def throughput(sizes: list[int], threads: list[int], rounds: int) -> list[float]:
    ratios = []
    print("1. forward + backward, p = 0.5, float32 (median of interleaved rounds)")
    print(
        f"{'elements':>9} {'thr':>3} {'rule':>9} {'torch ms':>9} {'ours ms':>8} "
        f"{'ratio':>6} {'ours Gel/s':>10} {'copy Gel/s':>10}"
    )
    for n in sizes:
        for t in threads:
            torch.set_num_threads(t)
            x = torch.randn(n, requires_grad=True)
            g = torch.randn(n)
            fns: dict[str, Callable[[], None]] = {
                "copy": lambda x=x: x.detach().clone(),
                "torch": lambda x=x, g=g: _fwd_bwd(torch.nn.Dropout(0.5), x, g),
            }
            for rule in RULES:
                layer = dropscale.Dropout(0.5, scaling=rule)
                fns[rule] = lambda x=x, g=g, layer=layer: _fwd_bwd(layer, x, g)
            med = _median_times(fns, rounds)
            for rule in RULES:
                ratio = med["torch"] / med[rule]
                ratios.append(ratio)
                print(
                    f"{n:>9} {t:>3} {rule:>9} {med['torch'] * 1e3:>9.1f} "
                    f"{med[rule] * 1e3:>8.1f} {ratio:>6.2f} "
                    f"{n / med[rule] / 1e9:>10.3f} {n / med['copy'] / 1e9:>10.3f}"
                )
    return ratios


def sampler_alone(n: int, rounds: int) -> None:
    """What limits the sampler: drawing a bool mask and the fused forward
    (no autograd) against a copy of the float32 tensor, 1 thread."""
    torch.set_num_threads(1)
    x = torch.randn(n)
    med = _median_times(
        {
            "copy": lambda: x.clone(),
            "keep_mask": lambda: _sampler.keep_mask((n,), 0.5),
            "fused forward": lambda: _sampler.dropout_train(x, 0.5, 2.0),
            "torch bernoulli_": lambda: torch.empty_like(x).bernoulli_(0.5),
        },
        rounds,
    )
    print(f"   {n} elements, 1 thread, no autograd:")
    for name, sec in med.items():
        print(
            f"   {name:>16}: {sec * 1e3:7.1f} ms  {n / sec / 1e9:6.3f} Gelem/s "
            f"({sec / med['copy']:.2f} x copy)"
        )


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise OSError(f"{key} not in /proc/self/status")


def _peak_child(side: str, n: int) -> None:
    """Run in a subprocess: print the peak-RSS growth of one fwd + bwd (MiB).

    Linux only: writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to
    the current resident set once the inputs exist, so only the memory that
    forward + backward adds is counted.
    """
    torch.set_num_threads(1)
    layer = torch.nn.Dropout(0.5) if side == "torch" else dropscale.Dropout(0.5)
    _fwd_bwd(layer, torch.randn(4096, requires_grad=True), torch.randn(4096))
    x = torch.randn(n, requires_grad=True)
    g = torch.randn(n)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mib("VmRSS")
    _fwd_bwd(layer, x, g)
    print(_status_mib("VmHWM") - base)


def peak_memory(n: int) -> tuple[float, float]:
    out = {}
    for side in ("torch", "dropscale"):
        res = subprocess.run(
            [sys.executable, __file__, "--_peak", side, "--_n", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        out[side] = float(res.stdout.strip().splitlines()[-1])
    print(f"\n2. peak memory growth of one forward + backward, {n} float32 elements")
    print(f"   (inputs x and grad: {2 * n * 4 / 2**20:.0f} MiB, not counted)")
    for side, mib in out.items():
        print(f"   {side:>9}: {mib:7.1f} MiB ({mib * 2**20 / n:.2f} bytes/element)")
    return out["torch"], out["dropscale"]


# ---------------------------------------------------------------------------
# PyTorch's CPU sampling patched into dropscale, for the study comparison


def _torch_keep_mask(shape, q, *, device=None, generator=None):
    keep = torch.empty(tuple(shape), device=device).bernoulli_(q, generator=generator)
    return keep.bool()


def _torch_dropout_train(x, q, a, *, mask_shape=None, generator=None):
    shape = tuple(x.shape) if mask_shape is None else tuple(mask_shape)
    noise = torch.empty(shape, dtype=x.dtype, device=x.device)
    return x * noise.bernoulli_(q, generator=generator).mul_(a)


def _free_keep_mask(shape, q, *, device=None, generator=None):
    return torch.ones(tuple(shape), dtype=torch.bool, device=device)


def _free_dropout_train(x, q, a, *, mask_shape=None, generator=None):
    return x * a


SIDES = {
    "torch": (_torch_keep_mask, _torch_dropout_train),
    "dropscale": (_sampler.keep_mask, _sampler.dropout_train),
    "free masks": (_free_keep_mask, _free_dropout_train),
}


_mask_seconds = [0.0]


def _timed(fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _mask_seconds[0] += time.perf_counter() - start

    return wrapper


def _study_once(side: str, out_dir: str) -> tuple[float, float]:
    """(wall seconds, seconds spent drawing masks) of one default study."""
    from dropscale import cli

    saved = (_sampler.keep_mask, _sampler.dropout_train)
    _sampler.keep_mask, _sampler.dropout_train = map(_timed, SIDES[side])
    _mask_seconds[0] = 0.0
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["study", "--out", out_dir, "--quiet"])
        wall = time.perf_counter() - start
    finally:
        _sampler.keep_mask, _sampler.dropout_train = saved
    if code not in (0, None):
        raise RuntimeError(f"dropscale study exited with {code}")
    return wall, _mask_seconds[0]


def study(rounds: int) -> float:
    """Wall time of the default study per side; "free masks" (all kept, no
    random draws) bounds what any sampler could gain."""
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    masks: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, side in enumerate(SIDES):
                wall, in_masks = _study_once(side, f"{tmp}/{i}-{r}")
                walls[side].append(wall)
                masks[side].append(in_masks)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print("\n3. default `dropscale study`: wall seconds per run [of them in masks]")
    for side, v in walls.items():
        runs = [f"{w:.1f} [{m:.1f}]" for w, m in zip(v, masks[side], strict=True)]
        print(f"   {side:>10}: " + ", ".join(runs))
    ratio = med["torch"] / med["dropscale"]
    bound = med["torch"] / med["free masks"]
    print(f"   ratio torch / dropscale (medians): {ratio:.2f}")
    print(f"   ratio torch / free masks (the most a sampler can give): {bound:.2f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--study-rounds", type=int, default=1)
    parser.add_argument("--_peak", choices=["torch", "dropscale"])
    parser.add_argument("--_n", type=int, default=1 << 24)
    args = parser.parse_args()
    if args._peak:
        _peak_child(args._peak, args._n)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads by "
        f"default, {os.cpu_count()} CPUs"
    )
    ratios = throughput([1 << 20, 1 << 24], [1, 2], args.rounds)
    print(f"   smallest ratio {min(ratios):.2f} (target >= 4)")
    sampler_alone(1 << 24, args.rounds)
    torch_mib, ours_mib = peak_memory(1 << 24)
    print(f"   dropscale / torch peak: {ours_mib / torch_mib:.2f} (target <= 1)")
    if not args.skip_study:
        torch.set_num_threads(1)
        ratio = study(args.study_rounds)
        print(f"   (target >= 1.5; measured {ratio:.2f})")


if __name__ == "__main__":
    main()
