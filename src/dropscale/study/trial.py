"""Train and evaluate one model of a study."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dropscale.data import Dataset
from dropscale.layers import Dropout
from dropscale.models import MLP
from dropscale.study.config import StudyConfig, Trial

__all__ = ["SiteStats", "TrialResult", "run_trial"]


@dataclass(frozen=True)
class SiteStats:
    """Measured statistics at one dropout site on the test set.

    ``in_*`` describe the site's input and ``out_*`` its output, in training
    mode (dropout active) and in inference mode, pooled over units and examples.
    """

    site: int
    train_in_mean: float
    train_in_std: float
    train_out_mean: float
    train_out_std: float
    eval_in_mean: float
    eval_in_std: float
    eval_out_mean: float
    eval_out_std: float


@dataclass(frozen=True)
class TrialResult:
    trial: Trial
    accuracy: float
    nll: float
    train_loss: float
    seconds: float
    sites: tuple[SiteStats, ...]


def _site_stats(model: nn.Module, x: Tensor, *, training: bool) -> list[list[float]]:
    """Mean and std of every Dropout site's input and output on ``x``."""
    sites = [m for m in model.modules() if isinstance(m, Dropout)]
    found: list[list[float]] = []

    def hook(module: nn.Module, args: tuple[Tensor], out: Tensor) -> None:
        (inp,) = args
        found.append(
            [inp.mean().item(), inp.std().item(), out.mean().item(), out.std().item()]
        )

    handles = [m.register_forward_hook(hook) for m in sites]
    mode = model.training
    try:
        model.train(training)
        with torch.no_grad():
            model(x)
    finally:
        model.train(mode)
        for h in handles:
            h.remove()
    return found


def run_trial(config: StudyConfig, data: Dataset, trial: Trial) -> TrialResult:
    """Train one model of the study and measure it on the test set.

    The seed fixes the initial weights, the order of the training batches and
    the stream of dropout masks, so trials that differ only in their convention
    are paired.
    """
    start = time.perf_counter()
    torch.manual_seed(trial.seed)
    model = MLP(
        data.n_features,
        config.hidden,
        data.n_classes,
        p=trial.p,
        scaling=trial.scaling,
    )
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    order = torch.Generator().manual_seed(10_007 * (trial.seed + 1))
    n = data.x_train.shape[0]
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    last = 0.0
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=order)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        last = total / n
    model.eval()
    with torch.no_grad():
        logits = model(data.x_test)
        nll = nn.functional.cross_entropy(logits, data.y_test).item()
        acc = (logits.argmax(1) == data.y_test).float().mean().item()
    train_mode = _site_stats(model, data.x_test, training=True)
    eval_mode = _site_stats(model, data.x_test, training=False)
    sites = tuple(
        SiteStats(i, *t, *e)
        for i, (t, e) in enumerate(zip(train_mode, eval_mode, strict=True))
    )
    return TrialResult(
        trial=trial,
        accuracy=acc,
        nll=nll,
        train_loss=last,
        seconds=time.perf_counter() - start,
        sites=sites,
    )
