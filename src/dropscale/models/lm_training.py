"""Training and evaluating a language model the AWD-LSTM way, sized for a CPU.

The recipe (Merity et al. 2017), with the choices this module makes:

* truncated back-propagation through time over :func:`dropscale.data.batchify`
  columns; the window length varies (:func:`dropscale.data.bptt_windows` with
  ``variable=True``) and the learning rate of each step is scaled by
  ``L / bptt`` so that long and short windows weigh alike per token;
* gradient-norm clipping at ``clip``;
* ``optimizer="sgd"``: plain SGD, then *non-monotonically triggered averaging*
  (NT-ASGD): the validation perplexity is checked every ``eval_every`` steps;
  once a check is worse than the best of all checks before the last
  ``nonmono`` ones, the trainer starts averaging the weights,
  ``w_avg <- w_avg + (w - w_avg) / k`` after the k-th step since the trigger,
  and evaluates with ``w_avg`` from then on;
* ``optimizer="adam"``: Adam with the same clipping, no averaging;
* the model with the best validation perplexity (averaged weights when
  averaging) is kept, and its test perplexity is reported.

Perplexity is ``exp`` of the mean cross-entropy (natural log) per target token
over the whole split, evaluated in eval mode with the hidden state carried
from window to window.

Known shortcoming: the paper's activation regularisers (AR and TAR on the
last layer's outputs) are not applied; every arm of a study is trained
without them alike.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dropscale.data.text import Corpus, batchify, bptt_windows
from dropscale.models.awd_lstm import AWDLSTM, Hidden
from dropscale.scaling import custom
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__all__ = [
    "LMCheck",
    "LMResult",
    "LMTrainConfig",
    "evaluate_perplexity",
    "scaled_eval_factors",
    "train_language_model",
]

log = logging.getLogger(__name__)

_SITES = (EmbeddingDropout, RNNDropout, WeightDropout)


@dataclass(frozen=True)
class LMTrainConfig:
    """How a language model is trained; every arm of a study shares one."""

    epochs: int = 2  # passes over the training split
    batch_size: int = 32  # parallel streams of batchify
    eval_batch_size: int = 10  # streams when evaluating
    bptt: int = 70  # mean window length (tokens)
    variable_bptt: bool = True  # AWD-LSTM's random window lengths
    optimizer: str = "sgd"  # "sgd" (with NT-averaging) or "adam"
    lr: float = 30.0  # SGD: 30 as in the paper; Adam: about 3e-3
    clip: float = 0.25  # max global gradient norm
    weight_decay: float = 1.2e-6  # L2 on every weight
    eval_every: int = 200  # steps between validation checks (and at epoch ends)
    nonmono: int = 5  # NT-ASGD patience in checks
    seed: int = 0  # initialisation is the caller's; this seeds masks and windows

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "bptt", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(
                f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}"
            )
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.weight_decay < 0 or self.nonmono < 0:
            raise ValueError("weight_decay and nonmono must be >= 0")


@dataclass(frozen=True)
class LMCheck:
    """One validation check: after ``step`` steps, with or without averaging."""

    step: int
    epoch: float
    val_ppl: float
    averaging: bool


@dataclass(frozen=True)
class LMResult:
    """Outcome of one training run."""

    val_ppl: float  # of the kept (best-validation) weights
    test_ppl: float
    train_loss: float  # mean cross-entropy over the last epoch's windows
    steps: int
    train_tokens: int
    seconds: float  # training time, validation checks excluded
    averaged_from_step: int | None  # None: averaging never started
    checks: list[LMCheck] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds > 0 else math.nan


def _detach(hidden: Hidden) -> Hidden:
    return [(h.detach(), c.detach()) for h, c in hidden]


@torch.no_grad()
def evaluate_perplexity(
    model: AWDLSTM, ids: Tensor, *, batch_size: int = 10, bptt: int = 70
) -> float:
    """``exp`` of the mean next-token cross-entropy over ``ids`` (1-D), eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    data = batchify(ids, batch_size)
    hidden = model.init_hidden(batch_size)
    total, count = 0.0, 0
    for x, y in bptt_windows(data, bptt):
        logits, hidden = model(x, hidden)
        total += float(
            F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        )
        count += y.numel()
    model.train(was_training)
    return math.exp(total / count)


@contextmanager
def scaled_eval_factors(
    model: nn.Module, scale: float | Callable[[nn.Module], float]
) -> Iterator[None]:
    """Multiply the inference factor ``b`` of every structured dropout site by
    ``scale`` (a number, or a function of the site) inside the block.

    Each site's convention ``(a(q), b(q))`` is replaced by the constant pair
    ``(a(q), c * b(q))`` at its ``q``; training is unchanged. This is the
    eval-scale sweep of the study: ``c = 1`` keeps the training mean,
    ``c = 1 / sqrt(q)`` under ``inverted`` matches a zero-mean unit's spread.
    """
    saved = []
    for module in model.modules():
        if isinstance(module, _SITES):
            a, b = module.scaling.factors(1.0 - module.p)
            c = scale(module) if callable(scale) else float(scale)
            saved.append((module, module.scaling))
            module.scaling = custom(a, b * c)
    try:
        yield
    finally:
        for module, scaling in saved:
            module.scaling = scaling


class _Averager:
    """Running mean of the parameters since a trigger step (NT-ASGD)."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.avg = [p.detach().clone() for p in params]
        self.k = 1

    @torch.no_grad()
    def update(self) -> None:
        self.k += 1
        for avg, p in zip(self.avg, self.params, strict=True):
            avg.add_(p.detach() - avg, alpha=1.0 / self.k)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        current = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, avg in zip(self.params, self.avg, strict=True):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, cur in zip(self.params, current, strict=True):
                    p.copy_(cur)


def train_language_model(
    model: AWDLSTM,
    corpus: Corpus,
    config: LMTrainConfig,
    *,
    on_check: Callable[[LMCheck], None] | None = None,
) -> LMResult:
    """Train ``model`` on ``corpus.train``; keep the best-validation weights.

    The model ends holding the kept weights in eval mode. Masks and window
    lengths come from one generator seeded with ``config.seed``, so two
    models trained with the same seed and sizes see identical windows and
    draw their masks from identical random streams, whatever their rule.
    """
    gen = torch.Generator().manual_seed(config.seed)
    train = batchify(corpus.train, config.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    averager: _Averager | None = None
    averaged_from: int | None = None
    checks: list[LMCheck] = []
    best_ppl, best_state = math.inf, None
    steps = tokens = 0
    train_seconds = 0.0
    last_loss = math.nan
    steps_per_epoch = math.ceil((train.shape[0] - 1) / config.bptt)

    def evaluate(ids: Tensor) -> float:
        return evaluate_perplexity(
            model, ids, batch_size=config.eval_batch_size, bptt=config.bptt
        )

    def check(epoch: float) -> None:
        nonlocal best_ppl, best_state, averager, averaged_from
        with averager.swapped_in() if averager else nullcontext():
            ppl = evaluate(corpus.valid)
            state = {k: v.clone() for k, v in model.state_dict().items()}
        record = LMCheck(steps, epoch, ppl, averager is not None)
        checks.append(record)
        log.info(
            "step %d epoch %.2f val ppl %.2f%s",
            steps,
            epoch,
            ppl,
            " (avg)" if averager else "",
        )
        if on_check is not None:
            on_check(record)
        if ppl < best_ppl:
            best_ppl, best_state = ppl, state
        # NT trigger: worse than the best check before the last `nonmono` ones.
        previous = [c.val_ppl for c in checks[:-1]]
        earlier = previous[: len(previous) - config.nonmono]
        if (
            config.optimizer == "sgd"
            and averager is None
            and len(previous) > config.nonmono
            and ppl > min(earlier)
        ):
            averager = _Averager(params)
            averaged_from = steps
            log.info("step %d: validation stopped improving; averaging weights", steps)

    for epoch in range(config.epochs):
        model.train()
        hidden = model.init_hidden(config.batch_size)
        epoch_loss, epoch_windows = 0.0, 0
        start = time.perf_counter()
        for x, y in bptt_windows(
            train, config.bptt, variable=config.variable_bptt, generator=gen
        ):
            for group in opt.param_groups:
                group["lr"] = config.lr * x.shape[0] / config.bptt
            hidden = _detach(hidden)
            logits, hidden = model(x, hidden, generator=gen)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, config.clip)
            opt.step()
            if averager is not None:
                averager.update()
            steps += 1
            tokens += y.numel()
            epoch_loss += float(loss.detach())
            epoch_windows += 1
            if steps % config.eval_every == 0:
                train_seconds += time.perf_counter() - start
                check(epoch + min(1.0, epoch_windows / steps_per_epoch))
                model.train()
                start = time.perf_counter()
        train_seconds += time.perf_counter() - start
        last_loss = epoch_loss / max(epoch_windows, 1)
        if not math.isfinite(last_loss):
            raise FloatingPointError(
                f"training diverged in epoch {epoch + 1} (mean loss {last_loss}); "
                f"lower lr (now {config.lr:g}) or clip (now {config.clip:g})"
            )
        if steps % config.eval_every != 0:
            check(epoch + 1.0)
    assert best_state is not None  # at least one check ran
    model.load_state_dict(best_state)
    model.eval()
    test_ppl = evaluate(corpus.test)
    return LMResult(
        val_ppl=best_ppl,
        test_ppl=test_ppl,
        train_loss=last_loss,
        steps=steps,
        train_tokens=tokens,
        seconds=train_seconds,
        averaged_from_step=averaged_from,
        checks=checks,
    )
