"""Compiled CPU kernels of the mask sampler (numba); see :mod:`dropscale._sampler`
for the definition of the mask they draw. Imported only when a mask is drawn
on the CPU, so ``import dropscale`` does not load numba.

Each kernel handles a range of blocks (or elements) and releases the GIL, so
:mod:`dropscale._sampler` can split a large tensor across threads; the result
is a function of element positions only, whatever the split.
"""

from __future__ import annotations

import numba
import numpy as np

from dropscale._sampler import (
    _BLOCK,
    _GAMMA,
    _LANE_MASK,
    _LANES,
    _MIX1,
    _MIX2,
    _WORDS_PER_BLOCK,
    LANE_BITS,
)

__all__ = ["drop_blocks", "keep_blocks", "scale_range"]

GAMMA, MIX1, MIX2 = np.uint64(_GAMMA), np.uint64(_MIX1), np.uint64(_MIX2)
LANE_MASK = np.uint64(_LANE_MASK)
WORDS, BLOCK, LANES = _WORDS_PER_BLOCK, _BLOCK, _LANES

_kernel = numba.njit(nogil=True, cache=True, boundscheck=False)
_inline = numba.njit(inline="always")


@_inline
def _block_hashes(h, seed, blk):
    """h[r] = mix(seed + (blk * WORDS + r) * GAMMA), SplitMix64's output."""
    base = np.uint64(blk * WORDS)
    for r in range(WORDS):
        z = seed + (base + np.uint64(r)) * GAMMA
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        h[r] = z ^ (z >> np.uint64(31))


@_inline
def _keep_lane(h, shift, t, keep):
    for r in range(keep.size):
        keep[r] = ((h[r] >> shift) & LANE_MASK) < t


@_inline
def _drop_lane(h, shift, t, a, x, out):
    zero = x.dtype.type(0)
    for r in range(x.size):
        k = ((h[r] >> shift) & LANE_MASK) < t
        out[r] = x[r] * a if k else zero


# The loops run over slices with range(size) so that indices are provably
# non-negative: numba then drops its wraparound checks and LLVM vectorises.


@_kernel
def keep_blocks(keep, seed, t, b0, b1):
    """Fill the uint8 view ``keep`` (flat) for blocks ``b0 .. b1 - 1``."""
    n = keep.size
    h = np.empty(WORDS, np.uint64)
    for blk in range(b0, b1):
        _block_hashes(h, seed, blk)
        for j in range(LANES):
            s = min(blk * BLOCK + j * WORDS, n)
            e = min(s + WORDS, n)
            _keep_lane(h, np.uint64(LANE_BITS * j), t, keep[s:e])


@_kernel
def drop_blocks(x, out, seed, t, a, b0, b1):
    """``out = keep ? x * a : 0`` for blocks b0 .. b1 - 1, the mask drawn on
    the fly (backward calls it again on the gradient with the same seed)."""
    n = x.size
    h = np.empty(WORDS, np.uint64)
    for blk in range(b0, b1):
        _block_hashes(h, seed, blk)
        for j in range(LANES):
            s = min(blk * BLOCK + j * WORDS, n)
            e = min(s + WORDS, n)
            shift = np.uint64(LANE_BITS * j)
            _drop_lane(h, shift, t, a, x[s:e], out[s:e])


@_kernel
def scale_range(x, keep, out, a, s, e):
    """``out = keep ? x * a : 0`` for elements s .. e - 1 (a saved mask)."""
    xs, ks, os_ = x[s:e], keep[s:e], out[s:e]
    zero = x.dtype.type(0)
    for r in range(xs.size):
        os_[r] = xs[r] * a if ks[r] else zero
