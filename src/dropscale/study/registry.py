"""What a study can train: data sets by name, models by name.

A study file names one data set and one model (``[dataset] name = ...``,
``[model] name = ...``); every other key in those two tables is an option,
checked against the entry's :class:`Option` list, so a typo is an error that
names the key and lists what is accepted.

How to add a data set
    Write a loader ``load(options) -> dropscale.data.Dataset`` (train and test
    tensors; ``x`` of shape (N, ...) and integer targets ``y`` of shape (N,) or
    (N, T) for sequence models) and register it::

        register_dataset(DatasetSpec(
            name="fashion-mnist",
            description="Zalando's 70,000 clothing images, 28x28",
            load=load_fashion_mnist,
            options=(Option("root", "/usr/share/datasets/fashion-mnist", _path),),
        ))

How to add a model
    Write ``build(data, options, p, scaling) -> torch.nn.Module``. The model
    maps a batch ``x`` to logits (N, C), or (N, T, C) for sequences, and every
    dropout site in it is a :class:`dropscale.Dropout` (or a subclass with a
    ``shared_dims`` tuple for masks shared over dims, e.g. channel dropout):
    the engine finds those modules, swaps each for a study site that draws its
    masks from the trial's own random stream, and measures it. Register it
    with ``batched=None`` and the engine trains its trials one at a time.
    To train many trials as one computation, also give ``batched(models, scalings)``,
    which turns K single-trial models (already initialised, one per trial) into
    one module that maps x of shape (K, N, ...) to logits (K, N, C) with its
    dropout sites as :class:`dropscale.study.sites.Site` modules in stacked
    mode (see :mod:`dropscale.study.batched` for the MLP).

The engine's own training loop treats examples independently (shuffled
mini-batches, cross-entropy on the flattened logits). A model that needs
another loop (for example truncated back-propagation through time with a
hidden state carried between windows) gives ``fit(model, sites, trial,
config, data, device) -> {metric: value}``, which trains one trial in place
and returns at least ``train_loss``; its trials are then trained one at a
time, and the engine measures the trained model as usual (see ``awd-lstm``
in :mod:`dropscale.study.workloads`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from dropscale.data import Dataset

__all__ = [
    "DATASETS",
    "MODELS",
    "DatasetSpec",
    "ModelSpec",
    "Option",
    "get_dataset",
    "get_model",
    "register_dataset",
    "register_model",
    "resolve_options",
]


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a positive integer")
    return value


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a number in (0, 1)")
    if not 0.0 < float(value) < 1.0:
        raise ValueError("a number in (0, 1)")
    return float(value)


def _non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("an integer >= 0")
    return value


def _widths(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("a non-empty list of positive integers")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError("a non-empty list of positive integers")
    return tuple(value)


@dataclass(frozen=True)
class Option:
    """One option of a data set or model: its name, default and checker.

    ``check(value)`` returns the normalised value or raises ``ValueError``
    whose message says what is accepted (e.g. "a positive integer").
    """

    name: str
    default: Any
    check: Callable[[object], Any]
    help: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A data set the study can load."""

    name: str
    description: str
    load: Callable[[Mapping[str, Any]], Dataset]
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A model family the study can train.

    Attributes:
        build: ``(data, options, p, scaling) -> nn.Module`` for one trial.
        batched: ``(models, scalings) -> nn.Module`` stacking K initialised
            single-trial models (and their conventions) into one computation,
            or ``None`` when the model can only be trained one trial at a time.
        measure: ``(model, data, scaling) -> {metric: value}``, extra metrics
            of one trained single-trial model, taken after the standard ones
            (it may change the model); ``None`` for none.
        fit: ``(model, sites, trial, config, data, device) -> {metric:
            value}``, the model's own training loop for one trial (the
            single-trial model as built, its dropouts already study sites);
            the result must hold ``train_loss`` and joins the trial's
            metrics. ``None``: the engine's loop.
    """

    name: str
    description: str
    build: Callable[[Dataset, Mapping[str, Any], float, str], nn.Module]
    batched: Callable[[list[nn.Module], list[str]], nn.Module] | None = None
    options: tuple[Option, ...] = ()
    measure: Callable[[nn.Module, Dataset, str], dict[str, float]] | None = None
    fit: Callable[..., dict[str, float]] | None = None

    @property
    def can_batch(self) -> bool:
        return self.batched is not None and self.fit is None


DATASETS: dict[str, DatasetSpec] = {}
MODELS: dict[str, ModelSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` (replacing one of the same name)."""
    DATASETS[spec.name] = spec
    return spec


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to :data:`MODELS` (replacing one of the same name)."""
    MODELS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(
            f"dataset.name: unknown data set {name!r}; accepted: "
            f"{', '.join(sorted(DATASETS))}"
        )
    return DATASETS[name]


def get_model(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(
            f"model.name: unknown model {name!r}; accepted: {', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


def resolve_options(
    table: str, options: tuple[Option, ...], given: Mapping[str, object]
) -> dict[str, Any]:
    """Defaults overlaid with ``given``, each value checked.

    Raises:
        ValueError: an unknown key or a bad value, naming ``table.key``, the
            value received and what is accepted.
    """
    known = {o.name: o for o in options}
    out = {o.name: o.default for o in options}
    for key, value in given.items():
        if key not in known:
            accepted = ", ".join(["name", *known]) if known else "name only"
            raise ValueError(f"{table}: unknown key {key!r}; accepted keys: {accepted}")
        try:
            out[key] = known[key].check(value)
        except ValueError as e:
            raise ValueError(f"{table}.{key}: got {value!r}; expected {e}") from None
    # Tuples and lists compare and serialise alike.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# ------------------------------------------------------------------ built-ins


def _load_digits(options: Mapping[str, Any]) -> Dataset:
    from dropscale.data import load_digits_split

    return load_digits_split(options["test_fraction"], options["split_seed"])


def _build_mlp(
    data: Dataset, options: Mapping[str, Any], p: float, scaling: str
) -> nn.Module:
    from dropscale.models import MLP

    if len(data.x_train.shape) != 2:
        raise ValueError(
            f"model mlp needs flat inputs (N, features); data set {data.name!r} "
            f"has inputs of shape {tuple(data.x_train.shape[1:])}"
        )
    return MLP(data.n_features, options["hidden"], data.n_classes, p=p, scaling=scaling)


def _stack_mlp(models: list[nn.Module], scalings: list[str]) -> nn.Module:
    from dropscale.study.batched import StackedSequential

    return StackedSequential.from_models([m.net for m in models], scalings)


register_dataset(
    DatasetSpec(
        name="digits",
        description="scikit-learn's 1,797 handwritten digits, 8x8 pixels, 10 classes",
        load=_load_digits,
        options=(
            Option("test_fraction", 0.25, _fraction, "share held out for testing"),
            Option("split_seed", 0, _non_negative_int, "seed of the stratified split"),
        ),
    )
)

register_model(
    ModelSpec(
        name="mlp",
        description="Linear -> ReLU -> Dropout per hidden layer, then a classifier",
        build=_build_mlp,
        batched=_stack_mlp,
        options=(Option("hidden", (128, 128), _widths, "hidden layer widths"),),
    )
)

# Real workloads (MNIST family, text corpora, CNN, AWD-LSTM, MLP with
# BatchNorm) register themselves on import.
from dropscale.study import workloads  # noqa: E402, F401
