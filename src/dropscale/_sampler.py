"""Bernoulli(q) masks from a counter-based hash, and the dropout kernels using them.

Every dropout form in dropscale draws its keep decisions here. One random
64-bit seed ``s`` is drawn from the caller's :class:`torch.Generator` (or from
PyTorch's default CPU generator); the mask is then a pure function of ``s``,
the keep threshold and each element's position:

* word ``w`` holds ``h_w = mix(s + w * G mod 2^64)``, SplitMix64's output
  function of a Weyl sequence (``G`` the 64-bit golden-ratio constant);
* elements come in blocks of 2048 (flat C order); element ``i`` sits in block
  ``i // 2048`` at offset ``r = i % 2048`` and reads the 32-bit lane
  ``j = r // 1024`` of word ``w = 1024 * (i // 2048) + r % 1024``:
  ``u_i = (h_w >> 32 j) & (2^32 - 1)``, uniform on ``0 .. 2^32 - 1``;
* the element is kept when ``u_i < t`` with ``t = round(q * 2^32)``.

So the keep probability actually used is ``q_eff = t / 2^32``, within
``2^-33`` of the requested ``q`` (16-bit lanes would save about 10 % of the
kernel time but only reach ``2^-17``), and callers compute their rescaling
factors from ``q_eff`` so that the mean is preserved exactly. Because the
mask is a function of positions, not of the order of work, it is the same
however the work is split into chunks or threads, on any device, with or
without the compiled kernels.

Backends: on the CPU, kernels compiled with numba (imported on first use)
draw the mask and apply it in one pass over memory, splitting large tensors
over ``torch.get_num_threads()`` threads; without numba, and on other devices,
the same hash is computed with tensor operations (slower, identical masks).
For backward, the fused path keeps only the seed and redraws the mask from
it; the other paths keep the boolean mask (1 byte per element).

Known limits: the tensor-operation fallback builds int64 temporaries (about
5 bytes per mask element) and runs several times slower than the kernels; the
fused CPU path returns a contiguous tensor even for a channels-last input;
inverted dropout of a CUDA tensor without a generator uses PyTorch's own
fused kernel instead (see :func:`dropscale.functional.dropout`), so only
masks drawn with a generator match the CPU's there.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LANE_BITS",
    "draw_seed",
    "dropout_train",
    "effective_keep_prob",
    "keep_mask",
    "keep_threshold",
    "masked_scale",
]

log = logging.getLogger(__name__)

LANE_BITS = 32
_LANES = 64 // LANE_BITS  # lanes per 64-bit word
_ONE = 1 << LANE_BITS  # threshold that keeps everything
_LANE_MASK = _ONE - 1
_WORDS_PER_BLOCK = 1024
_BLOCK = _LANES * _WORDS_PER_BLOCK  # elements per block
_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
# Below this many elements one thread does the work: starting threads costs
# more than it saves.
_PARALLEL_MIN = 1 << 18
_KERNEL_DTYPES = (torch.float32, torch.float64)
_CPUS = os.cpu_count() or 1
_CPU = torch.device("cpu")
_scratch = threading.local()


def keep_threshold(q: float) -> int:
    """``t = round(q * 2^32)``: an element is kept when its 32-bit draw is < t."""
    return int(round(float(q) * _ONE))


def effective_keep_prob(q: float) -> float:
    """``q_eff = round(q * 2^32) / 2^32``, the keep probability really used."""
    return keep_threshold(q) / _ONE


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One uniform 64-bit draw (as an int in ``[0, 2^64)``) from ``generator``.

    Without a generator PyTorch's default CPU generator is used, so
    ``torch.manual_seed`` fixes the masks on every device.
    """
    if generator is None or generator.device.type == "cpu":
        word = getattr(_scratch, "word", None)
        if word is None:  # one per thread, so threads never share it
            word = _scratch.word = torch.empty((), dtype=torch.int64)
    else:
        word = torch.empty((), dtype=torch.int64, device=generator.device)
    word.random_(-(1 << 63), None, generator=generator)
    return int(word.item()) & _MASK64


# --------------------------------------------------------------------------
# The hash with tensor operations (any device; the reference for the kernels)


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 value with the same bits."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _shift_right(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bit patterns (``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _keep_torch(n: int, seed: int, t: int, device: torch.device) -> Tensor:
    blocks = -(-n // _BLOCK)
    w = torch.arange(blocks * _WORDS_PER_BLOCK, dtype=torch.int64, device=device)
    z = w * _signed(_GAMMA) + _signed(seed)  # int64 arithmetic wraps mod 2^64
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    z = (z ^ _shift_right(z, 31)).view(blocks, 1, _WORDS_PER_BLOCK)
    lanes = torch.arange(_LANES, device=device).view(1, _LANES, 1) * LANE_BITS
    u = (z >> lanes) & _LANE_MASK  # sign bits shifted in are masked off
    return (u < t).reshape(-1)[:n]


# --------------------------------------------------------------------------
# Compiled CPU kernels (numba), built on first use


_kernels: dict[str, Callable[..., Any]] | None = None
_kernels_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _build_kernels() -> dict[str, Callable[..., Any]]:
    from dropscale import _kernels as k

    return {"keep": k.keep_blocks, "drop": k.drop_blocks, "scale": k.scale_range}


def _get_kernels() -> dict[str, Callable[..., Any]] | None:
    """The compiled kernels, or None where numba is missing (logged once)."""
    global _kernels
    if _kernels is None:
        with _kernels_lock:
            if _kernels is None:
                try:
                    _kernels = _build_kernels()
                except ImportError:
                    log.info("numba is not installed: masks use tensor operations")
                    _kernels = {}
    return _kernels or None


def _reset_pool_after_fork() -> None:
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_after_fork)


def _run_split(task: Callable[[int, int], None], units: int, n: int) -> None:
    """Run ``task(u0, u1)`` over ``[0, units)``, split across torch's threads
    when the tensor has at least ``_PARALLEL_MIN`` elements.

    The range is cut into chunks of about ``_PARALLEL_MIN / 2`` elements that
    the calling thread and ``threads - 1`` pool threads take in turn, so a
    pool thread that starts late (its core still busy, for instance with
    PyTorch's own threads spinning after a parallel op) just takes fewer
    chunks. The kernels release the GIL; the result does not depend on the
    split.
    """
    global _pool
    threads = 1 if n < _PARALLEL_MIN else min(torch.get_num_threads(), _CPUS, units)
    if threads <= 1:
        task(0, units)
        return
    if _pool is None or _pool._max_workers < threads - 1:
        _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="dropscale")
    step = max(1, units * (_PARALLEL_MIN // 2) // n)
    chunks = -(-units // step)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        for c in iter(counter.__next__, None):
            if c >= chunks:
                return
            task(c * step, min((c + 1) * step, units))

    futures = [_pool.submit(work) for _ in range(threads - 1)]
    work()
    for f in futures:
        f.result()


def _numpy(t: Tensor) -> Any:
    return t.detach().numpy()


def _use_kernels(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _KERNEL_DTYPES


# --------------------------------------------------------------------------
# Public (package-internal) entry points


def keep_mask(
    shape: Sequence[int],
    q: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Boolean mask of ``shape`` with ``P(True) = effective_keep_prob(q)``.

    Draws one 64-bit seed from ``generator`` per call, whatever the shape.
    """
    shape = tuple(map(int, shape))
    device = _CPU if device is None else torch.device(device)
    seed, t = draw_seed(generator), keep_threshold(q)
    n = math.prod(shape)
    kernels = _get_kernels() if device.type == "cpu" else None
    if kernels is None:
        return _keep_torch(n, seed, t, device).view(shape)
    keep = torch.empty(shape, dtype=torch.bool)
    if n:
        k8 = keep.view(torch.uint8).numpy().reshape(-1)
        fill, s, tt = kernels["keep"], np.uint64(seed), np.uint64(t)
        blocks = -(-n // _BLOCK)
        if n < _PARALLEL_MIN:
            fill(k8, s, tt, 0, blocks)
        else:
            _run_split(lambda b0, b1: fill(k8, s, tt, b0, b1), blocks, n)
    return keep


def _scale_into(x: Tensor, keep: Tensor, a: float) -> Tensor:
    """``where(keep, x, 0) * a`` as a new tensor; ``keep`` broadcasts to ``x``."""
    kernels = _get_kernels() if _use_kernels(x) else None
    if kernels is None or keep.shape != x.shape or not x.is_contiguous():
        out = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return out if a == 1.0 else out.mul_(a)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    xs, os_ = _numpy(x).reshape(-1), _numpy(out).reshape(-1)
    ks = _numpy(keep.contiguous()).reshape(-1).view(np.uint8)
    aa = xs.dtype.type(a)
    step = 1 << 16

    def task(c0: int, c1: int) -> None:
        kernels["scale"](xs, ks, os_, aa, c0 * step, min(c1 * step, xs.size))

    _run_split(task, -(-xs.size // step), xs.size)
    return out


class _MaskedScale(torch.autograd.Function):
    """``y = where(keep, x, 0) * a``; backward is the same map of the gradient,
    so it saves only ``keep`` (1 byte per element) and twice-differentiates."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, keep: Tensor, a: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.a = a
        return _scale_into(x, keep, a)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return _MaskedScale.apply(grad, keep, ctx.a), None, None


class _FusedDropout(torch.autograd.Function):
    """Draw the mask and apply it in one pass (CPU, float32/float64).

    Nothing per element is saved for backward: the gradient goes through the
    same map with the same seed, which redraws the identical mask.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, seed: int, t: int, a: float) -> Tensor:
        kernels = _get_kernels()
        assert kernels is not None, "caller checks that the kernels exist"
        x = x.contiguous()
        out = torch.empty_like(x)
        xs, os_ = _numpy(x).reshape(-1), _numpy(out).reshape(-1)
        s, tt, aa = np.uint64(seed), np.uint64(t), xs.dtype.type(a)

        def task(b0: int, b1: int) -> None:
            kernels["drop"](xs, os_, s, tt, aa, b0, b1)

        _run_split(task, -(-xs.size // _BLOCK), xs.size)
        ctx.seed, ctx.t, ctx.a = seed, t, a
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        return _FusedDropout.apply(grad, ctx.seed, ctx.t, ctx.a), None, None, None


def masked_scale(x: Tensor, keep: Tensor, a: float) -> Tensor:
    """``where(keep, x, 0) * a`` with a backward that saves only ``keep``.

    Dropped elements are exact zeros even where ``x`` is infinite or NaN.
    """
    return _MaskedScale.apply(x, keep, float(a))


def dropout_train(
    x: Tensor,
    q: float,
    a: float,
    *,
    mask_shape: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training dropout ``y = a * m * x`` with ``m ~ Bernoulli(q_eff)``.

    ``a`` must already be computed from ``effective_keep_prob(q)``. With
    ``mask_shape`` (broadcastable to ``x``) one decision is shared along the
    dims where it is 1. On the CPU a float32/float64 tensor with an unshared
    mask is handled in one fused pass.
    """
    shape = tuple(x.shape) if mask_shape is None else tuple(mask_shape)
    if shape == tuple(x.shape) and _use_kernels(x) and _get_kernels() is not None:
        return _FusedDropout.apply(x, draw_seed(generator), keep_threshold(q), a)
    keep = keep_mask(shape, q, device=x.device, generator=generator)
    return masked_scale(x, keep, a)
