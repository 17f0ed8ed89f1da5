"""Dropout sites under the study's control.

A :class:`Site` is the study's stand-in for a :class:`dropscale.Dropout`: it
holds, for K trials stacked along a leading dimension (or for one trial,
unstacked), the keep probability ``q_k``, the training factor ``a_k`` and the
inference factor ``b_k``, and it can

- draw training masks from each trial's own random stream (so a trial trained
  alone and the same trial trained inside a stack see the same masks),
- multiply its inference factor by a per-trial ``c`` (the eval-scale sweep),
- record the mean and std of its input and output per trial.

Training output ``a_k * m * x`` with ``m ~ Bernoulli(q_k)`` drawn by
:func:`dropscale.functional.keep_mask`; inference output ``c_k * b_k * x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dropscale.functional import effective_keep_prob, keep_mask, mask_shape
from dropscale.layers import Dropout
from dropscale.scaling import get_scaling

__all__ = ["MaskStreams", "Site", "replace_dropout", "sites_of"]


class MaskStreams:
    """One random stream per distinct ``(seed, p)`` among K trials.

    Trials that share a seed and a drop probability draw identical masks
    (whatever their convention), so they share one generator; a trial on its
    own has exactly the stream it would have in a stack. All sites of a model
    draw from the same streams, in forward order.
    """

    def __init__(self, seeds: Sequence[int], ps: Sequence[float], device) -> None:
        index: dict[tuple[int, float], list[int]] = {}
        for k, key in enumerate(zip(seeds, ps, strict=True)):
            index.setdefault((int(key[0]), float(key[1])), []).append(k)
        self.groups: list[tuple[torch.Generator, int]] = []
        owner = [0] * len(seeds)
        for g, ((seed, _), ks) in enumerate(index.items()):
            gen = torch.Generator(device=device).manual_seed(seed)
            self.groups.append((gen, ks[0]))
            for k in ks:
                owner[k] = g
        self.k = len(seeds)
        # trial k takes the masks of group owner[k]; identity when no trials share
        self.owner = (
            None if owner == list(range(self.k)) else torch.tensor(owner, device=device)
        )

    def draw(self, shape: Sequence[int], qs: Sequence[float], device) -> Tensor:
        """Masks of shape (K, *shape), trial k's kept with probability qs[k]."""
        masks = []
        for gen, first in self.groups:
            q = qs[first]
            if q >= 1.0:
                masks.append(torch.ones(tuple(shape), dtype=torch.bool, device=device))
            else:
                masks.append(keep_mask(shape, q, device=device, generator=gen))
        out = torch.stack(masks)
        return out if self.owner is None else out[self.owner]


class Site(nn.Module):
    """A dropout site for K trials (``stacked=True``: x is (K, N, ...)) or for
    one trial (``stacked=False``: x is (N, ...), K = 1).

    Args:
        ps: drop probability per trial.
        scalings: convention name per trial.
        shared_dims: dims of the unstacked input along which one mask decision
            is shared (for example (2, 3) for channel dropout on images).
        stacked: whether inputs carry the leading trial dim.
    """

    def __init__(
        self,
        ps: Sequence[float],
        scalings: Sequence[str],
        *,
        shared_dims: Sequence[int] = (),
        stacked: bool = True,
    ) -> None:
        super().__init__()
        if not stacked and len(ps) != 1:
            raise ValueError(f"an unstacked site holds one trial, got {len(ps)}")
        qs = [1.0 - float(p) for p in ps]
        # Factors at the keep probability the sampler really uses.
        facs = [
            get_scaling(s).factors(effective_keep_prob(q))
            for s, q in zip(scalings, qs, strict=True)
        ]
        self.qs = qs
        self.register_buffer("a", torch.tensor([f[0] for f in facs]))
        self.register_buffer("b", torch.tensor([f[1] for f in facs]))
        self.register_buffer("c", torch.ones(len(qs)))
        self.shared_dims = tuple(shared_dims)
        self.stacked = stacked
        self.dropping = True
        self.streams: MaskStreams | None = None
        self.record: Tensor | None = None

    @property
    def k(self) -> int:
        return len(self.qs)

    def _per_trial(self, v: Tensor, x: Tensor) -> Tensor:
        if not self.stacked:
            return v.reshape(())
        return v.reshape((self.k,) + (1,) * (x.dim() - 1))

    def _sums(self, t: Tensor) -> tuple[Tensor, Tensor]:
        flat = t.detach().reshape(self.k if self.stacked else 1, -1).double()
        return flat.sum(1), (flat * flat).sum(1)

    def start_recording(self) -> None:
        """Accumulate per-trial sums of the input and output from now on."""
        self.record = torch.zeros(self.k, 5, dtype=torch.float64, device=self.a.device)

    def recorded(self) -> Tensor:
        """(K, 4): mean and std of the input, mean and std of the output, pooled
        over every value seen since :meth:`start_recording`; stops recording."""
        if self.record is None:
            raise RuntimeError("Site: nothing recorded")
        n, sx, sxx, sy, syy = self.record.unbind(1)
        self.record = None
        den = (n - 1).clamp_min(1)
        vx = ((sxx - sx * sx / n) / den).clamp_min(0)
        vy = ((syy - sy * sy / n) / den).clamp_min(0)
        return torch.stack([sx / n, vx.sqrt(), sy / n, vy.sqrt()], 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.dropping:
            if self.streams is None:
                raise RuntimeError("Site: set mask streams before training mode")
            inner = x.shape[1:] if self.stacked else x.shape
            shape = mask_shape(inner, self.shared_dims)
            keep = self.streams.draw(shape, self.qs, x.device)
            if not self.stacked:
                keep = keep[0]
            # bool -> float is slow on the CPU; through uint8 it is 3x faster
            scale = keep.view(torch.uint8).to(x.dtype)
            scale.mul_(self._per_trial(self.a, x).to(x.dtype))
            y = x * scale
        else:
            y = x * self._per_trial(self.b * self.c, x).to(x.dtype)
        if self.record is not None:
            sx, sxx = self._sums(x)
            sy, syy = self._sums(y)
            n = torch.full_like(sx, x.numel() / self.k if self.stacked else x.numel())
            self.record += torch.stack([n, sx, sxx, sy, syy], 1)
        return y


def sites_of(model: nn.Module) -> list[Site]:
    """The model's sites in forward order of registration."""
    return [m for m in model.modules() if isinstance(m, Site)]


def replace_dropout(model: nn.Module, scaling: str) -> list[Site]:
    """Swap every :class:`dropscale.Dropout` in ``model`` for an unstacked Site.

    The site keeps the layer's ``p`` (and its ``shared_dims`` if it has one)
    and takes the trial's convention ``scaling`` (a name or ``custom:A,B``).
    """
    swaps = [
        (module, child_name, child)
        for module in model.modules()
        for child_name, child in module.named_children()
        if isinstance(child, Dropout)
    ]
    for parent, child_name, child in swaps:
        site = Site(
            [child.p],
            [scaling],
            shared_dims=getattr(child, "shared_dims", ()),
            stacked=False,
        )
        setattr(parent, child_name, site)
    return sites_of(model)
