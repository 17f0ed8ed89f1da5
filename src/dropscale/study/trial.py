"""Train and measure the models of a study, one trial or a stack at a time.

One engine serves both paths. A group of K trials is either one stacked
module (x of shape (K, N, ...)) when the model can be batched, or K single
models run one after the other, each wrapped so that it too takes (1, N, ...).
Per trial, the seed fixes

- the initial weights (``torch.manual_seed(trial.init_seed)`` before the
  single-trial model is built; a stack copies those weights),
- the order of the training batches (``trial.order_seed``),
- the training masks (``trial.mask_seed``) and the evaluation masks
  (``trial.eval_seed``), drawn per (seed, p) by
  :class:`~dropscale.study.sites.MaskStreams`,

so trials that differ only in their convention are paired, and a trial in a
stack equals the same trial alone up to float rounding.

What is measured on every trained model (test set unless said otherwise):

- ``accuracy``, ``nll``: the convention's own inference rule, output ``b x``.
- per site: mean and std of the site's input and output in training mode
  (masks drawn) and in inference mode.
- the eval-scale sweep: every site's inference factor multiplied by ``c``
  for each ``c`` in the grid (``scale_<c>_accuracy``/``_nll``); ``c = 1`` is
  the convention's own rule, which matches the training mean for inverted
  and classic dropout.
- the std-matching ``c`` per site (``site<i>_std_c``), calibrated on the
  first ``calibration_examples`` training inputs: site by site, with the
  earlier sites already rescaled, ``c_i = std_train / std_eval`` of the
  site's output; then ``scale_std_accuracy``/``_nll`` with those factors.
- Monte-Carlo dropout (``mc_<T>_accuracy``/``_nll``): the average of the
  softmax over T passes with masks drawn, for every T in ``mc_samples``
  (nested: the first T passes of one run of ``max(T)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dropscale.data import Dataset
from dropscale.study.config import StudyConfig, Trial
from dropscale.study.registry import get_dataset, get_model
from dropscale.study.sites import MaskStreams, Site, replace_dropout, sites_of

__all__ = ["TrialResult", "load_data", "run_group", "run_trial"]

SITE_FIELDS = (
    "train_in_mean",
    "train_in_std",
    "train_out_mean",
    "train_out_std",
    "eval_in_mean",
    "eval_in_std",
    "eval_out_mean",
    "eval_out_std",
    "std_c",
)
EVAL_CHUNK = 4096


@dataclass
class TrialResult:
    """Everything measured on one trained model.

    ``metrics`` maps names (``accuracy``, ``nll``, ``train_loss``,
    ``scale_<c>_accuracy``, ``mc_<T>_nll``, ...) to floats; ``sites`` holds one
    dict per dropout site with the keys in ``SITE_FIELDS``.
    """

    trial: Trial
    metrics: dict[str, float]
    sites: list[dict[str, float]]
    seconds: float
    batched: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]


def load_data(config: StudyConfig) -> Dataset:
    """The study's data set, loaded with its options."""
    return get_dataset(config.dataset).load(config.dataset_options)


def _device(config: StudyConfig) -> torch.device:
    dev = torch.device(config.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device: got {config.device!r}; no CUDA device here")
    return dev


class _Single(nn.Module):
    """One trial's model, taking and returning a leading trial dim of 1."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x[0]).unsqueeze(0)


def _set(sites: list[Site], *, dropping: bool, streams: MaskStreams | None = None):
    for s in sites:
        s.dropping = dropping
        if streams is not None:
            s.streams = streams


def _logits(model: nn.Module, x: Tensor, k: int) -> Tensor:
    """Logits (K, N, ...) of every trial on the same inputs x (N, ...)."""
    outs = []
    for i in range(0, x.shape[0], EVAL_CHUNK):
        chunk = x[i : i + EVAL_CHUNK]
        outs.append(model(chunk.unsqueeze(0).expand(k, *chunk.shape)))
    return torch.cat(outs, 1)


def _log_probs(logits: Tensor) -> Tensor:
    return F.log_softmax(logits.float(), dim=-1)


def _scores(logp: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy and NLL per trial from log-probabilities (K, N, ..., C)."""
    k, c = logp.shape[0], logp.shape[-1]
    lp = logp.reshape(k, -1, c)
    yy = y.reshape(1, -1, 1).expand(k, -1, 1)
    nll = -lp.gather(2, yy).squeeze(2).mean(1)
    acc = (lp.argmax(2) == yy.squeeze(2)).double().mean(1)
    return acc, nll


def _train(
    model: nn.Module,
    sites: list[Site],
    trials: Sequence[Trial],
    config: StudyConfig,
    data: Dataset,
    device: torch.device,
) -> Tensor:
    """Train the K trials of ``model``; return each trial's last-epoch loss."""
    k = len(trials)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=config.lr, fused=device.type == "cpu" or None
        )
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    _set(
        sites,
        dropping=True,
        streams=MaskStreams(
            [t.mask_seed for t in trials], [t.p for t in trials], device
        ),
    )
    seeds = sorted({t.order_seed for t in trials})
    orders = {s: torch.Generator().manual_seed(s) for s in seeds}
    row = torch.tensor([seeds.index(t.order_seed) for t in trials])
    x, y = data.x_train.to(device), data.y_train.to(device)
    n, bs = x.shape[0], config.batch_size
    model.train()
    last = torch.zeros(k, dtype=torch.float64)
    for _ in range(config.epochs):
        perms = torch.stack([torch.randperm(n, generator=orders[s]) for s in seeds])
        perms = perms[row].to(device)
        total = torch.zeros(k, dtype=torch.float64)
        for i in range(0, n, bs):
            idx = perms[:, i : i + bs]
            logits = model(x[idx])
            c = logits.shape[-1]
            losses = F.cross_entropy(
                logits.reshape(-1, c), y[idx].reshape(-1), reduction="none"
            )
            losses = losses.view(k, -1).mean(1)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            total += losses.detach().double().cpu() * idx.shape[1]
        last = total / n
    return last


@torch.no_grad()
def _measure(
    model: nn.Module,
    sites: list[Site],
    trials: Sequence[Trial],
    config: StudyConfig,
    data: Dataset,
    device: torch.device,
) -> list[tuple[dict[str, float], list[dict[str, float]]]]:
    k = len(trials)
    model.eval()
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    x_cal = data.x_train[: config.calibration_examples].to(device)
    streams = MaskStreams([t.eval_seed for t in trials], [t.p for t in trials], device)
    metrics: list[dict[str, float]] = [{} for _ in range(k)]

    def put(name: str, values: Tensor) -> None:
        for i, v in enumerate(values.tolist()):
            metrics[i][name] = float(v)

    def set_c(values: Tensor) -> None:  # values (K, S)
        for j, s in enumerate(sites):
            s.c.copy_(values[:, j])

    n_sites = len(sites)
    ones = torch.ones(k, n_sites, device=device)
    set_c(ones)

    # 1. own rule, with the inference-mode site statistics on the test set
    _set(sites, dropping=False, streams=streams)
    for s in sites:
        s.start_recording()
    acc, nll = _scores(_log_probs(_logits(model, x_test, k)), y_test)
    eval_stats = [s.recorded() for s in sites]
    put("accuracy", acc)
    put("nll", nll)

    # 2. training-mode site statistics on the test set
    _set(sites, dropping=True)
    for s in sites:
        s.start_recording()
    _logits(model, x_test, k)
    train_stats = [s.recorded() for s in sites]

    # 3. std-matching c per site, calibrated on training inputs
    for s in sites:
        s.start_recording()
    _logits(model, x_cal, k)
    cal_train = [s.recorded() for s in sites]
    _set(sites, dropping=False)
    std_c = ones.clone()
    for j, s in enumerate(sites):
        set_c(std_c)
        s.start_recording()
        _logits(model, x_cal, k)
        eval_std = s.recorded()[:, 3]
        train_std = cal_train[j][:, 3].to(eval_std)
        ok = eval_std > 0
        std_c[:, j] = torch.where(ok, train_std / eval_std.clamp_min(1e-30), 1.0).to(
            std_c
        )

    # 4. eval-scale sweep, then the std-matching factors
    for c in config.eval_scales:
        set_c(ones * c)
        acc, nll = _scores(_log_probs(_logits(model, x_test, k)), y_test)
        put(f"scale_{c:g}_accuracy", acc)
        put(f"scale_{c:g}_nll", nll)
    set_c(std_c)
    acc, nll = _scores(_log_probs(_logits(model, x_test, k)), y_test)
    put("scale_std_accuracy", acc)
    put("scale_std_nll", nll)
    set_c(ones)

    # 5. Monte-Carlo dropout: running log of the summed softmax over passes
    _set(sites, dropping=True)
    checkpoints = set(config.mc_samples)
    total: Tensor | None = None
    for t in range(1, max(checkpoints) + 1):
        lp = _log_probs(_logits(model, x_test, k))
        total = lp if total is None else torch.logaddexp(total, lp)
        if t in checkpoints:
            acc, nll = _scores(total - math.log(t), y_test)
            put(f"mc_{t}_accuracy", acc)
            put(f"mc_{t}_nll", nll)
    _set(sites, dropping=False)

    out = []
    for i in range(k):
        site_rows = []
        for j in range(n_sites):
            tr, ev = train_stats[j][i].tolist(), eval_stats[j][i].tolist()
            values = [*tr, *ev, float(std_c[i, j])]
            site_rows.append(dict(zip(SITE_FIELDS, values, strict=True)))
        out.append((metrics[i], site_rows))
    return out


def _build(config: StudyConfig, data: Dataset, trial: Trial) -> nn.Module:
    torch.manual_seed(trial.init_seed)
    return get_model(config.model).build(
        data, config.model_options, trial.p, trial.scaling
    )


def _run(
    model: nn.Module,
    trials: Sequence[Trial],
    config: StudyConfig,
    data: Dataset,
    device: torch.device,
    batched: int,
) -> list[TrialResult]:
    start = time.perf_counter()
    model.to(device)
    sites = sites_of(model)
    spec = get_model(config.model)
    fitted: dict[str, float] = {}
    if spec.fit is not None:
        # The model's own loop (one trial; see ModelSpec.fit).
        if len(trials) != 1:
            raise ValueError(f"model {config.model} trains one trial at a time")
        inner = model.model if isinstance(model, _Single) else model
        fitted = dict(spec.fit(inner, sites, trials[0], config, data, device))
        loss = torch.tensor([fitted.pop("train_loss")], dtype=torch.float64)
    else:
        loss = _train(model, sites, trials, config, data, device)
    measured = _measure(model, sites, trials, config, data, device)
    if fitted:
        measured[0][0].update(fitted)
    if spec.measure is not None and len(trials) == 1:
        measured[0][0].update(spec.measure(model, data, trials[0].scaling))
    seconds = (time.perf_counter() - start) / len(trials)
    results = []
    for i, t in enumerate(trials):
        metrics, site_rows = measured[i]
        metrics["train_loss"] = float(loss[i])
        results.append(TrialResult(t, metrics, site_rows, seconds, batched))
    return results


def run_group(
    config: StudyConfig,
    trials: Sequence[Trial],
    data: Dataset | None = None,
    *,
    batched: bool = True,
) -> list[TrialResult]:
    """Train and measure ``trials``: as one stack when the model can be batched
    (and ``batched``), otherwise one trial at a time."""
    if not trials:
        return []
    device = _device(config)
    data = load_data(config) if data is None else data
    spec = get_model(config.model)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    try:
        if batched and spec.can_batch and len(trials) > 1:
            singles = [_build(config, data, t) for t in trials]
            stack = spec.batched(singles, [t.scaling for t in trials])
            return _run(stack, trials, config, data, device, len(trials))
        results = []
        for t in trials:
            results += run_trial(config, t, data)
        return results
    finally:
        torch.set_num_threads(threads)


def run_trial(
    config: StudyConfig, trial: Trial, data: Dataset | None = None
) -> list[TrialResult]:
    """Train and measure one trial on its own (a plain single-model loop)."""
    device = _device(config)
    data = load_data(config) if data is None else data
    model = _build(config, data, trial)
    replace_dropout(model, trial.scaling)
    return _run(_Single(model), [trial], config, data, device, 1)
