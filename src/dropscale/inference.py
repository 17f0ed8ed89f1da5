"""Monte-Carlo dropout at inference.

Instead of the deterministic inference rule ``b(q) * x``, keep every dropout
site stochastic and average ``T`` passes: the prediction is the sample mean
``mean_t f_t(x)`` and its spread the sample standard deviation (with the
``T - 1`` denominator). Everything that is not a dropout site stays in eval
mode, so BatchNorm uses (and never updates) its running statistics.

A dropout site is any of: dropscale's :class:`~dropscale.Dropout`,
:class:`~dropscale.RNNDropout`, :class:`~dropscale.EmbeddingDropout`,
:class:`~dropscale.WeightDropout`, :class:`~dropscale.AlphaDropout` and
:class:`~dropscale.GaussianDropout`; ``torch.nn``'s ``Dropout``,
``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout``; a
multi-layer ``nn.RNN/LSTM/GRU`` with ``dropout > 0`` (its between-layer
dropout); and ``nn.MultiheadAttention`` with ``dropout > 0``. Only the site's
own mode flag is switched; a wrapped module (the LSTM inside a
``WeightDropout``) keeps eval mode unless it is a site itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dropscale.layers import Dropout
from dropscale.noise import AlphaDropout, GaussianDropout
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__all__ = ["dropout_sites", "is_dropout_site", "mc_dropout", "predict_mc"]

_ALWAYS_SITES = (
    Dropout,
    RNNDropout,
    EmbeddingDropout,
    WeightDropout,
    AlphaDropout,
    GaussianDropout,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def is_dropout_site(module: nn.Module) -> bool:
    """Whether ``module``'s own training flag switches dropout on (see above)."""
    if isinstance(module, _ALWAYS_SITES):
        return True
    if isinstance(module, nn.RNNBase):
        return module.dropout > 0 and module.num_layers > 1
    if isinstance(module, nn.MultiheadAttention):
        return module.dropout > 0
    return False


def dropout_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every dropout site of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if is_dropout_site(m)]


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which ``model``'s dropout sites sample and all else is in eval.

    On exit every module's ``training`` flag is restored to what it was, also
    when the block raises. Moment-matched dropout layers (``scaling="moment"``)
    read but do not update their running statistics inside the block.

    Example::

        >>> import torch, dropscale
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
        >>> with dropscale.mc_dropout(net):
        ...     net[1].training, net[0].training
        (True, False)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"mc_dropout needs an nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    moment_layers = [
        (m, m.update_running_stats)
        for m in model.modules()
        if isinstance(m, Dropout) and m.is_moment
    ]
    try:
        model.eval()
        for _, site in dropout_sites(model):
            site.training = True
        for layer, _ in moment_layers:
            layer.update_running_stats = False
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for layer, flag in moment_layers:
            layer.update_running_stats = flag


def predict_mc(
    model: nn.Module,
    x: Tensor,
    *,
    samples: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Monte-Carlo dropout prediction: mean and std of ``samples`` passes.

    Runs ``model(x)`` ``T = samples`` times inside :func:`mc_dropout` without
    gradients and returns ``(mean, std)`` elementwise, with
    ``std = sqrt(sum_t (f_t - mean)^2 / (T - 1))``, accumulated one pass at a
    time (Welford), so memory does not grow with ``T``.

    With a ``generator``, one seed drawn from it seeds a private fork of
    torch's global random state for the passes, so every site, including
    ``torch.nn.Dropout`` (which has no generator argument), repeats exactly
    for the same generator state; the caller's global random state is left
    as it was. Without one, the passes use the global random state.

    Args:
        model: a module whose ``forward(x)`` returns one tensor.
        x: the input batch.
        samples: number of passes ``T``, at least 2.
        generator: source of the seed for repeatable predictions.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(
            f"predict_mc: samples must be an int >= 2 (the std needs two passes), "
            f"got {samples!r}"
        )
    devices = []
    if x.is_cuda:  # fork only the device the passes run on
        index = x.device.index
        devices = [torch.cuda.current_device() if index is None else index]
    with torch.random.fork_rng(devices=devices, enabled=generator is not None):
        if generator is not None:
            seed = int(
                torch.randint(
                    0, 2**62, (1,), generator=generator, device=generator.device
                )
            )
            torch.random.default_generator.manual_seed(seed)
            if x.is_cuda:
                with torch.cuda.device(x.device):
                    torch.cuda.manual_seed(seed)
        with mc_dropout(model), torch.no_grad():
            return _welford(model, x, samples)


def _welford(model: nn.Module, x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    mean: Tensor | None = None
    sq_dev: Tensor | None = None
    for t in range(1, samples + 1):
        out = model(x)
        if not isinstance(out, Tensor):
            raise TypeError(
                "predict_mc: the model must return one tensor, got "
                f"{type(out).__name__}; wrap it so that forward returns the output"
            )
        out = out.to(torch.promote_types(out.dtype, torch.float32))
        if mean is None or sq_dev is None:
            mean, sq_dev = out.clone(), torch.zeros_like(out)
            continue
        delta = out - mean
        mean += delta / t
        sq_dev += delta * (out - mean)
    assert mean is not None and sq_dev is not None  # samples >= 2
    return mean, (sq_dev / (samples - 1)).sqrt()
