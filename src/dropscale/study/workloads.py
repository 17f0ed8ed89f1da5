"""Real workloads for the study: the MNIST family, text corpora, a CNN, an
AWD-LSTM language model and an MLP with BatchNorm.

Importing this module registers (see :mod:`dropscale.study.registry`):

data sets
    ``fashion-mnist``, ``mnist``, ``kmnist``: IDX files (see
    :mod:`dropscale.data.idx` for where they are looked for); options
    ``data_dir``, ``n_train``, ``n_test``, ``subset_seed``.
    ``corpus``: a text corpus for next-token prediction; the Shakespeare
    texts of the data cache unless ``data_dir`` names a corpus folder (see
    :mod:`dropscale.data.text`). A :class:`TextDataset`: the training split
    as independent windows of ``window`` tokens (``x_train``, used to
    calibrate the std-matching factors), the test split as ``eval_streams``
    parallel streams (``x_test`` of shape (B, L), read with the hidden state
    carried from window to window), and the whole corpus for the training
    recipe.

models
    ``cnn``: :class:`dropscale.models.CNN` (channel dropout).
    ``awd-lstm``: :class:`dropscale.models.AWDLSTM`, its five dropouts as
    study sites (:func:`~dropscale.models.awd_lstm.with_dropout_sites`),
    trained by the AWD-LSTM recipe of
    :func:`dropscale.models.train_language_model` (see :func:`fit_awd_lstm`):
    truncated back-propagation through time with the hidden state carried
    across windows and detached, variable window lengths, gradient clipping,
    SGD with non-monotonically triggered averaging (``optimizer = "sgd"``) or
    Adam, and the best-validation weights kept. Extra metrics ``val_ppl`` and
    ``test_ppl``. The trial's ``p`` is the largest site's drop probability
    (weight dropout); the other four keep the AWD-LSTM proportions, so every
    site's probability is ``p / 0.5`` times its AWD default (one shared
    multiplier).
    ``mlp-bn``: hidden layers ``Linear -> ReLU -> Dropout -> BatchNorm``
    (``order = "dropout-bn"``) or ``Linear -> ReLU -> BatchNorm -> Dropout``
    (``"bn-dropout"``), with extra metrics: BatchNorm's measured variance
    shift next to the exact value, and the accuracy after re-estimating the
    BatchNorm statistics with dropout off.

Known shortcomings: the std-matching factors of ``awd-lstm`` are calibrated
on independent training windows (zero initial state), while every test-set
measurement carries the state; the test logits of a whole split are held in
memory at once (tokens x vocabulary floats), so a large test split with a
large vocabulary needs ``max_test_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dropscale.data import Corpus, Dataset
from dropscale.study.registry import (
    DatasetSpec,
    ModelSpec,
    Option,
    register_dataset,
    register_model,
)

if TYPE_CHECKING:  # config imports the registry, which imports this module
    from dropscale.study.config import StudyConfig, Trial

__all__ = ["StreamLM", "TextDataset", "bn_measure", "fit_awd_lstm", "windows"]


# ------------------------------------------------------------------ checks


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("an integer >= 0 (0 means all)")
    return value


def _positive(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a positive integer")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _choice(*choices: str):
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return str(value)

    return check


def _widths(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("a non-empty list of positive integers")
    return tuple(_positive(v) for v in value)


def _number(lowest: float, strict: bool):
    what = f"a number {'>' if strict else '>='} {lowest:g}"

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(what)
        v = float(value)
        if not math.isfinite(v) or v < lowest or (strict and v == lowest):
            raise ValueError(what)
        return v

    return check


# ------------------------------------------------------------- image data


def _idx_loader(name: str):
    def load(options: Mapping[str, Any]) -> Dataset:
        from dropscale.data.idx import load_idx_dataset

        return load_idx_dataset(
            name,
            options["data_dir"] or None,
            n_train=options["n_train"] or None,
            n_test=options["n_test"] or None,
            seed=options["subset_seed"],
        )

    return load


def _register_idx() -> None:
    from dropscale.data.idx import IDX_SETS

    for name, spec in IDX_SETS.items():
        register_dataset(
            DatasetSpec(
                name=name,
                description=f"{spec.title}: 28x28 grey images, 10 classes (IDX)",
                load=_idx_loader(name),
                options=(
                    Option("data_dir", "", _text, "folder of the IDX files"),
                    Option("n_train", 0, _count, "random training subset (0: all)"),
                    Option("n_test", 0, _count, "random test subset (0: all)"),
                    Option("subset_seed", 0, _count, "seed of the subsets"),
                ),
            )
        )


# -------------------------------------------------------------- text data


def windows(ids: Tensor, length: int, limit: int = 0) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows of ``ids`` (1-D): inputs and next-token targets.

    Window ``i`` is ``x = ids[i*L : (i+1)*L]``, ``y = ids[i*L+1 : (i+1)*L+1]``;
    ``limit > 0`` uses only the first ``limit`` tokens. Returns two (N, L)
    tensors.
    """
    if limit:
        ids = ids[: limit + 1]
    n = (len(ids) - 1) // length
    if n < 1:
        raise ValueError(
            f"window: {len(ids)} tokens do not fill one window of {length}; "
            "use a shorter window or more text"
        )
    x = ids[: n * length].view(n, length)
    y = ids[1 : n * length + 1].view(n, length)
    return x, y


@dataclass(frozen=True)
class TextDataset(Dataset):
    """A corpus as the study sees it.

    ``x_train``/``y_train``: independent windows of ``window`` tokens (N, L)
    from the training split; ``x_test``/``y_test``: the test split cut into
    ``eval_streams`` parallel streams (B, L) by
    :func:`dropscale.data.batchify`, inputs and next-token targets;
    ``corpus``: the (possibly truncated) splits as 1-D id streams, which the
    training recipe reads; ``window``: the mean BPTT length.
    """

    corpus: Corpus | None = None
    window: int = 35
    eval_streams: int = 10


def _load_corpus(options: Mapping[str, Any]) -> TextDataset:
    from dropscale.data import batchify
    from dropscale.data.shakespeare import shakespeare_dir
    from dropscale.data.text import load_corpus

    folder = options["data_dir"] or shakespeare_dir()
    corpus = load_corpus(
        folder,
        level=options["level"],
        tokenizer=options["tokenizer"],
        lower=options["lower"],
        min_freq=options["min_freq"],
        max_vocab=options["max_vocab"] or None,
    )
    n_train = options["max_train_tokens"] or len(corpus.train)
    n_eval = options["max_test_tokens"] or max(len(corpus.valid), len(corpus.test))
    corpus = replace(
        corpus,
        train=corpus.train[: n_train + 1],
        valid=corpus.valid[:n_eval],
        test=corpus.test[:n_eval],
    )
    x_tr, y_tr = windows(corpus.train, options["window"])
    streams = options["eval_streams"]
    for split in ("valid", "test"):
        if len(getattr(corpus, split)) < 2 * streams:
            raise ValueError(
                f"dataset.eval_streams: {streams} streams need at least "
                f"{2 * streams} {split} tokens, the corpus has "
                f"{len(getattr(corpus, split))}; use fewer streams or more text"
            )
    test = batchify(corpus.test, streams)  # (T, B)
    return TextDataset(
        name=f"corpus:{corpus.name}",
        x_train=x_tr,
        y_train=y_tr,
        x_test=test[:-1].t().contiguous(),
        y_test=test[1:].t().contiguous(),
        n_classes=len(corpus.vocab),
        corpus=corpus,
        window=options["window"],
        eval_streams=streams,
    )


# ----------------------------------------------------------------- models


def _build_cnn(
    data: Dataset, options: Mapping[str, Any], p: float, scaling: str
) -> nn.Module:
    from dropscale.models import CNN

    side = math.isqrt(data.n_features)
    if data.x_train.dim() != 2 or side * side != data.n_features:
        raise ValueError(
            f"model cnn needs flat square grey images (N, side*side); data set "
            f"{data.name!r} has inputs of shape {tuple(data.x_train.shape[1:])}"
        )
    return CNN(
        (1, side, side),
        data.n_classes,
        channels=options["channels"],
        hidden=options["hidden"],
        p=p,
        scaling=scaling,
    )


class StreamLM(nn.Module):
    """Next-token logits of token streams: (N, L) ids -> (N, L, V).

    The N rows are independent streams; each is read in windows of
    ``window`` tokens with the hidden state carried (and detached) from one
    window to the next, as a language model is evaluated. A row no longer
    than ``window`` is one window from a zero state.
    """

    def __init__(self, model: nn.Module, window: int) -> None:
        super().__init__()
        self.lm = model
        self.window = window

    def forward(self, tokens: Tensor) -> Tensor:
        hidden = None
        outs = []
        for i in range(0, tokens.shape[1], self.window):
            logits, hidden = self.lm(tokens[:, i : i + self.window].t(), hidden)
            hidden = [(h.detach(), c.detach()) for h, c in hidden]
            outs.append(logits.transpose(0, 1))  # (N, l, V)
        return torch.cat(outs, 1)


def _build_awd(
    data: Dataset, options: Mapping[str, Any], p: float, scaling: str
) -> nn.Module:
    from dropscale.models.awd_lstm import AWDLSTM, with_dropout_sites

    if data.x_train.dim() != 2 or data.x_train.is_floating_point():
        raise ValueError(
            f"model awd-lstm needs token windows (N, T) of integer ids; data set "
            f"{data.name!r} has {data.x_train.dtype} inputs of shape "
            f"{tuple(data.x_train.shape[1:])}; use the corpus data set"
        )
    model = AWDLSTM(
        data.n_classes,
        emb_size=options["emb_size"],
        hidden_size=options["hidden_size"],
        n_layers=options["n_layers"],
        drop_mult=p / 0.5,
        scaling=scaling,
    )
    window = getattr(data, "window", int(data.x_train.shape[1]))
    return StreamLM(with_dropout_sites(model), window)


class _SiteLM(nn.Module):
    """An AWD-LSTM whose dropouts are study sites, shaped for the recipe.

    :func:`dropscale.models.train_language_model` switches dropout with
    ``train()``/``eval()`` and passes a generator to the model; study sites
    switch with their ``dropping`` flag and draw from the trial's mask
    streams. This adapter turns the first into the second and ignores the
    generator (which then seeds only the window lengths).
    """

    def __init__(self, lm: nn.Module, sites: Sequence[nn.Module]) -> None:
        super().__init__()
        self.lm = lm
        self._sites = list(sites)  # a plain list: not registered twice

    def init_hidden(self, batch_size: int):
        return self.lm.init_hidden(batch_size)

    def train(self, mode: bool = True) -> _SiteLM:
        super().train(mode)
        for s in self._sites:
            s.dropping = mode
        return self

    def forward(self, tokens: Tensor, hidden=None, *, generator=None):
        return self.lm(tokens, hidden)


def fit_awd_lstm(
    model: nn.Module,
    sites: Sequence[nn.Module],
    trial: Trial,
    config: StudyConfig,
    data: Dataset,
    device: torch.device,
) -> dict[str, float]:
    """Train one ``awd-lstm`` trial by the AWD-LSTM recipe; return its metrics.

    ``model`` is the trial's :class:`StreamLM` with study sites. Pairing by
    seed: the initial weights are the engine's (``trial.init_seed``), the
    window lengths come from a generator seeded with ``trial.order_seed`` and
    the training masks from the sites' streams seeded with
    ``trial.mask_seed``, so trials that share a seed and ``p`` see the same
    windows and draw the same masks whatever their rule. The training split
    is cut into ``training.batch_size`` streams; ``training.epochs``,
    ``optimizer`` and ``lr`` are the study's; the recipe's other knobs are
    the model's options (``clip``, ``weight_decay``, ``eval_every``,
    ``nonmono``, ``variable_bptt``). Validation and test perplexity use
    ``eval_streams`` streams and windows of ``window`` tokens.

    Returns ``train_loss`` (mean cross-entropy over the last epoch's
    windows), ``val_ppl`` (best check), ``test_ppl`` (of the kept weights),
    ``lm_steps`` and ``averaged_from_step`` (-1: averaging never started).
    """
    from dropscale.models.lm_training import LMTrainConfig, train_language_model
    from dropscale.study.sites import MaskStreams

    if not isinstance(data, TextDataset) or data.corpus is None:
        raise ValueError(
            f"model awd-lstm trains on token streams; data set {data.name!r} has "
            "none; use the corpus data set"
        )
    opts = config.model_options
    recipe = LMTrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        eval_batch_size=data.eval_streams,
        bptt=data.window,
        variable_bptt=opts["variable_bptt"],
        optimizer=config.optimizer,
        lr=config.lr,
        clip=opts["clip"],
        weight_decay=opts["weight_decay"],
        eval_every=opts["eval_every"],
        nonmono=opts["nonmono"],
        seed=trial.order_seed,
    )
    streams = MaskStreams([trial.mask_seed], [trial.p], device)
    for s in sites:
        s.streams = streams
    corpus = data.corpus
    corpus = replace(
        corpus,
        train=corpus.train.to(device),
        valid=corpus.valid.to(device),
        test=corpus.test.to(device),
    )
    lm = _SiteLM(model.lm, sites)
    result = train_language_model(lm, corpus, recipe)  # type: ignore[arg-type]
    lm.eval()
    return {
        "train_loss": result.train_loss,
        "val_ppl": result.val_ppl,
        "test_ppl": result.test_ppl,
        "lm_steps": float(result.steps),
        "averaged_from_step": float(
            -1 if result.averaged_from_step is None else result.averaged_from_step
        ),
    }


class MLPBatchNorm(nn.Module):
    """Hidden layers with dropout next to BatchNorm1d (no affine part).

    ``order="dropout-bn"``: ``Linear -> ReLU -> Dropout -> BatchNorm``;
    ``"bn-dropout"``: ``Linear -> ReLU -> BatchNorm -> Dropout``.
    """

    def __init__(
        self, n_in: int, hidden, n_out: int, *, p: float, scaling: str, order: str
    ) -> None:
        super().__init__()
        from dropscale.layers import Dropout

        self.order = order
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            drop = Dropout(p, scaling=scaling)
            norm = nn.BatchNorm1d(h, affine=False)
            pair = [drop, norm] if order == "dropout-bn" else [norm, drop]
            layers += [nn.Linear(width, h), nn.ReLU(), *pair]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _build_mlp_bn(
    data: Dataset, options: Mapping[str, Any], p: float, scaling: str
) -> nn.Module:
    return MLPBatchNorm(
        data.n_features,
        options["hidden"],
        data.n_classes,
        p=p,
        scaling=scaling,
        order=options["order"],
    )


@torch.no_grad()
def bn_measure(model: nn.Module, data: Dataset, scaling: str) -> dict[str, float]:
    """BatchNorm's variance shift (measured and exact) and the re-estimation fix.

    For each BatchNorm layer ``j`` with dropout right before it (metrics
    ``bn<j>_shift_measured`` and ``bn<j>_shift_exact``): the measured shift
    is the inference variance of the BN input (dropout in eval mode) over
    BN's running variance, pooled over units (sum of one over sum of the
    other, so that near-dead units with tiny variances cannot dominate); the
    exact value pools :func:`dropscale.moments.batchnorm_shift`'s eval and
    train variances ``V_e`` and ``V_t`` at each unit's measured input mean
    and std (the activations before dropout) alike. Units that do not fire
    on the calibration inputs (the first 4,096 training inputs) are left out
    of both.
    Then BN's running statistics are re-estimated on the training inputs
    with dropout off, and the test accuracy and NLL are measured again.
    """
    from dropscale.moments import batchnorm_shift
    from dropscale.study.sites import sites_of

    net = model.model.net if hasattr(model, "model") else model.net
    sites = sites_of(net)
    norms = [m for m in net if isinstance(m, nn.BatchNorm1d)]
    layers = list(net)
    out: dict[str, float] = {}
    # Inputs of every BN and every site at inference, on the training inputs.
    seen: dict[int, Tensor] = {}
    hooks = [
        layers[i].register_forward_hook(
            lambda _m, inp, _o, i=i: seen.__setitem__(i, inp[0].detach())
        )
        for i in range(len(layers))
    ]
    for s in sites:
        s.dropping = False
    model.eval()
    x_cal = data.x_train[:4096]
    net(x_cal)
    for h in hooks:
        h.remove()
    measured, exact = [], []
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.BatchNorm1d) or i == 0:
            continue
        before = layers[i - 1]
        if before not in sites:
            continue
        pre = seen[i - 1]  # activations entering dropout, (N, H)
        # Units that fire on the calibration inputs; a dead unit has no
        # variance to shift and would divide by (nearly) zero.
        live = (pre.std(0) > 0) & (layer.running_var > 0)
        var_eval = seen[i].var(0)
        measured.append(float(var_eval[live].sum() / layer.running_var[live].sum()))
        p = 1.0 - before.qs[0]  # a site holds keep probabilities q
        train_var = eval_var = 0.0
        means, stds = pre.mean(0)[live].tolist(), pre.std(0)[live].tolist()
        for m, s_ in zip(means, stds, strict=True):
            unit = batchnorm_shift(p, mean=m, std=s_, scaling=scaling, eps=0.0)
            train_var += unit.running_var  # V_t, dropout's training variance
            eval_var += unit.eval_out_std**2 * unit.running_var  # V_e
        exact.append(eval_var / train_var)
    # Per BatchNorm layer: the first sees the data through one dropout only,
    # so its measured shift is the clean check of the exact value; later
    # layers also inherit the train/eval difference of the layers before.
    for j, (m, e) in enumerate(zip(measured, exact, strict=True), 1):
        out[f"bn{j}_shift_measured"] = m
        out[f"bn{j}_shift_exact"] = e
    # The fix: re-estimate BN statistics with dropout in inference mode.
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
        norm.train()
    for i in range(0, len(data.x_train), 512):
        net(data.x_train[i : i + 512])
    model.eval()
    logp = torch.log_softmax(net(data.x_test).float(), -1)
    out["bn_recal_accuracy"] = float((logp.argmax(1) == data.y_test).double().mean())
    out["bn_recal_nll"] = float(-logp.gather(1, data.y_test[:, None]).mean())
    return out


# ------------------------------------------------------------ registration


_register_idx()

register_dataset(
    DatasetSpec(
        name="corpus",
        description="a text corpus as windows for next-token prediction "
        "(default: the Shakespeare texts of the data cache)",
        load=_load_corpus,
        options=(
            Option("data_dir", "", _text, "corpus folder ('': Shakespeare)"),
            Option("level", "word", _choice("word", "char"), "token level"),
            Option("tokenizer", "words", _choice("words", "whitespace"), "splitter"),
            Option("lower", True, _flag, "lower-case the text"),
            Option("min_freq", 3, _positive, "rarer training tokens become <unk>"),
            Option("max_vocab", 0, _count, "vocabulary cap (0: none)"),
            Option("window", 35, _positive, "tokens per window (mean BPTT length)"),
            Option("max_train_tokens", 0, _count, "training tokens used (0: all)"),
            Option(
                "max_test_tokens", 0, _count, "validation and test tokens used (0: all)"
            ),
            Option("eval_streams", 10, _positive, "parallel streams when evaluating"),
        ),
    )
)

register_model(
    ModelSpec(
        name="cnn",
        description="two conv blocks with channel dropout, then an MLP head",
        build=_build_cnn,
        options=(
            Option("channels", (16, 32), _widths, "channels of each conv block"),
            Option("hidden", 128, _positive, "width of the head's hidden layer"),
        ),
    )
)

register_model(
    ModelSpec(
        name="awd-lstm",
        description="AWD-LSTM language model (tied weights, five dropout sites)",
        build=_build_awd,
        fit=fit_awd_lstm,
        options=(
            Option("emb_size", 64, _positive, "embedding width"),
            Option("hidden_size", 192, _positive, "LSTM width"),
            Option("n_layers", 2, _positive, "LSTM layers"),
            Option("clip", 0.25, _number(0.0, True), "max gradient norm"),
            Option("weight_decay", 1.2e-6, _number(0.0, False), "L2 on weights"),
            Option("eval_every", 200, _positive, "steps between validation checks"),
            Option("nonmono", 5, _count, "NT-averaging patience, in checks"),
            Option("variable_bptt", True, _flag, "random window lengths"),
        ),
    )
)

register_model(
    ModelSpec(
        name="mlp-bn",
        description="MLP with dropout next to BatchNorm (order dropout-bn or "
        "bn-dropout)",
        build=_build_mlp_bn,
        measure=bn_measure,
        options=(
            Option("hidden", (256, 256), _widths, "hidden layer widths"),
            Option(
                "order",
                "dropout-bn",
                _choice("dropout-bn", "bn-dropout"),
                "dropout before or after BatchNorm",
            ),
        ),
    )
)
