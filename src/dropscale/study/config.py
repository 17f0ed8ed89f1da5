"""The definition of a study: what is trained, under which rules, how often.

A study is written as a TOML file (or picked from the presets shipped in
``dropscale/presets``)::

    description = "what this study is for"
    scalings = ["inverted", "classic", "variance", "none"]
    ps = [0.1, 0.25, 0.5]          # drop probabilities
    seeds = 5                      # seed indices 0 .. seeds - 1

    [dataset]                      # name + the data set's options
    name = "digits"
    test_fraction = 0.25

    [model]                        # name + the model's options
    name = "mlp"
    hidden = [128, 128]

    [training]
    epochs = 30
    batch_size = 64
    optimizer = "adam"             # or "sgd" (momentum 0.9)
    lr = 0.001

    [inference]
    eval_scales = [0.5, 0.75, 1.0, 1.5, 2.0]   # must include 1
    mc_samples = [1, 2, 5, 10, 20, 50, 100]
    calibration_examples = 512

    [run]                          # how to run it; not part of the definition
    executor = "local"             # or "ray"
    address = ""                   # Ray cluster address; "" starts a local one
    group_size = 12                # trials trained together as one computation
    threads = 1
    device = "cpu"

Every key is checked: an unknown key or a bad value raises ``ValueError``
naming the key, the value and what is accepted. The *definition* (everything
except ``[run]``) is what a ledger compares before resuming.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dropscale.scaling import get_scaling
from dropscale.study.registry import get_dataset, get_model, resolve_options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_EVAL_SCALES",
    "DEFAULT_MC_SAMPLES",
    "StudyConfig",
    "Trial",
    "definition_diff",
    "load_preset",
    "load_study_file",
    "preset_names",
]

DEFAULT_SCALINGS = ("inverted", "classic", "variance", "none")
DEFAULT_EVAL_SCALES = (0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.5, 1.75, 2.0)
DEFAULT_MC_SAMPLES = (1, 2, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class Trial:
    """One trained model: a convention, a drop probability and a seed index.

    Every trial with the same ``seed`` starts from the same initial weights,
    sees the training batches in the same order and draws its dropout masks
    from the same random stream, whatever its convention.
    """

    scaling: str
    p: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.scaling}|p={self.p:g}|seed={self.seed}"

    @property
    def init_seed(self) -> int:
        """Seeds the initial weights."""
        return self.seed

    @property
    def order_seed(self) -> int:
        """Seeds the order of the training batches."""
        return 10_007 * (self.seed + 1)

    @property
    def mask_seed(self) -> int:
        """Seeds the dropout masks drawn in training."""
        return 7_919 * (self.seed + 1) + 1

    @property
    def eval_seed(self) -> int:
        """Seeds the masks drawn at evaluation (MC dropout, train-mode stats)."""
        return 104_729 * (self.seed + 1) + 3


# ------------------------------------------------------------------- checks


def _err(key: str, value: object, accepted: str) -> ValueError:
    return ValueError(f"{key}: got {value!r}; expected {accepted}")


def _pos_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _err(key, value, "a positive integer")
    return value


def _pos_float(key: str, value: object) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not (math.isfinite(value) and value > 0):
        raise _err(key, value, "a finite number > 0")
    return float(value)


def _list(key: str, value: object, what: str) -> list:
    if not isinstance(value, list | tuple) or not value:
        raise _err(key, value, f"a non-empty list of {what}")
    return list(value)


def _str(key: str, value: object, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or (choices is not None and value not in choices):
        accepted = "a string" if choices is None else "one of " + ", ".join(choices)
        raise _err(key, value, accepted)
    return value


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study and how to run it; the trials are its grid.

    Build one with keyword arguments, :meth:`from_mapping` (a parsed TOML
    document), :func:`load_study_file` or :func:`load_preset`.
    """

    description: str = ""
    dataset: str = "digits"
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    scalings: tuple[str, ...] = DEFAULT_SCALINGS
    ps: tuple[float, ...] = (0.1, 0.25, 0.5)
    seeds: int = 5
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    eval_scales: tuple[float, ...] = DEFAULT_EVAL_SCALES
    mc_samples: tuple[int, ...] = DEFAULT_MC_SAMPLES
    calibration_examples: int = 512
    executor: str = "local"
    address: str = ""
    group_size: int = 12
    threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        get_dataset(self.dataset)
        spec = get_model(self.model)
        set_(
            self,
            "dataset_options",
            resolve_options(
                "dataset", get_dataset(self.dataset).options, self.dataset_options
            ),
        )
        set_(
            self,
            "model_options",
            resolve_options("model", spec.options, self.model_options),
        )
        names = []
        for s in _list("scalings", self.scalings, "convention names"):
            try:
                names.append(get_scaling(s).name if ":" not in s else s)
            except (ValueError, TypeError) as e:
                raise ValueError(f"scalings: {e}") from None
        if len(set(names)) != len(names):
            raise _err("scalings", list(self.scalings), "each convention once")
        set_(self, "scalings", tuple(names))
        ps = []
        for p in _list("ps", self.ps, "drop probabilities"):
            ok = not isinstance(p, bool) and isinstance(p, int | float)
            if not ok or math.isnan(p) or not 0.0 <= p < 1.0:
                raise _err("ps", p, "drop probabilities p in [0, 1)")
            ps.append(float(p))
        if len(set(ps)) != len(ps):
            raise _err("ps", list(self.ps), "each p once")
        set_(self, "ps", tuple(ps))
        for key, name in (
            ("seeds", "seeds"),
            ("epochs", "training.epochs"),
            ("batch_size", "training.batch_size"),
            ("calibration_examples", "inference.calibration_examples"),
        ):
            _pos_int(name, getattr(self, key))
        for key in ("group_size", "threads"):
            _pos_int(f"run.{key}", getattr(self, key))
        set_(self, "lr", _pos_float("training.lr", self.lr))
        _str("training.optimizer", self.optimizer, ("adam", "sgd"))
        scales = [
            _pos_float("inference.eval_scales", c)
            for c in _list("inference.eval_scales", self.eval_scales, "numbers > 0")
        ]
        if 1.0 not in scales:
            raise _err("inference.eval_scales", scales, "a grid that includes c = 1")
        set_(self, "eval_scales", tuple(sorted(set(scales))))
        ts = [
            _pos_int("inference.mc_samples", t)
            for t in _list("inference.mc_samples", self.mc_samples, "integers >= 1")
        ]
        set_(self, "mc_samples", tuple(sorted(set(ts))))
        _str("run.executor", self.executor, ("local", "ray"))
        _str("run.address", self.address)
        _str("run.device", self.device)
        try:
            kind = torch.device(self.device).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda", "mps"):
            raise ValueError(
                f"run.device (--device): got {self.device!r}; expected cpu, cuda, "
                "cuda:N or mps"
            )
        _str("description", self.description)

    # ------------------------------------------------------------ the grid

    def trials(self) -> list[Trial]:
        """The grid, seed-major so that early trials cover every convention."""
        return [
            Trial(s, float(p), seed)
            for seed in range(self.seeds)
            for p in self.ps
            for s in self.scalings
        ]

    def groups(self, trials: list[Trial] | None = None) -> list[list[Trial]]:
        """Trials cut into groups trained together (one trial per group when the
        model cannot be batched), in grid order."""
        trials = self.trials() if trials is None else trials
        size = self.group_size if get_model(self.model).can_batch else 1
        return [trials[i : i + size] for i in range(0, len(trials), size)]

    # ------------------------------------------------------------- mapping

    def definition(self) -> dict[str, Any]:
        """What the results depend on (everything but the ``[run]`` table)."""
        d = self.as_dict()
        for key in ("executor", "address", "group_size", "threads", "device"):
            d.pop(key)
        return d

    def definition_hash(self) -> str:
        text = json.dumps(self.definition(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "dataset": self.dataset,
            "dataset_options": dict(self.dataset_options),
            "model": self.model,
            "model_options": dict(self.model_options),
            "scalings": list(self.scalings),
            "ps": list(self.ps),
            "seeds": self.seeds,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "eval_scales": list(self.eval_scales),
            "mc_samples": list(self.mc_samples),
            "calibration_examples": self.calibration_examples,
            "executor": self.executor,
            "address": self.address,
            "group_size": self.group_size,
            "threads": self.threads,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyConfig:
        """Inverse of :meth:`as_dict` (also accepts a :meth:`definition`)."""
        kw = dict(d)
        for key in ("scalings", "ps", "eval_scales", "mc_samples"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], source: str = "study") -> StudyConfig:
        """Build from a parsed study file; errors name ``source`` and the key."""
        try:
            return cls(**_flatten(doc))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def with_overrides(self, **changes: Any) -> StudyConfig:
        """A copy with the given fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_TABLES: dict[str, dict[str, str]] = {
    "": {
        "description": "description",
        "scalings": "scalings",
        "ps": "ps",
        "seeds": "seeds",
    },
    "training": {
        "epochs": "epochs",
        "batch_size": "batch_size",
        "optimizer": "optimizer",
        "lr": "lr",
    },
    "inference": {
        "eval_scales": "eval_scales",
        "mc_samples": "mc_samples",
        "calibration_examples": "calibration_examples",
    },
    "run": {
        "executor": "executor",
        "address": "address",
        "group_size": "group_size",
        "threads": "threads",
        "device": "device",
    },
}


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    top_keys = set(_TABLES[""]) | {"dataset", "model", "training", "inference", "run"}
    for key, value in doc.items():
        if key not in top_keys:
            raise ValueError(
                f"unknown key {key!r}; accepted: {', '.join(sorted(top_keys))}"
            )
        if key in ("dataset", "model"):
            if not isinstance(value, Mapping):
                raise _err(key, value, f"a table [{key}] with name = ...")
            opts = dict(value)
            if "name" in opts:
                kw[key] = _str(f"{key}.name", opts.pop("name"))
            kw[f"{key}_options"] = opts
        elif key in _TABLES:
            if not isinstance(value, Mapping):
                raise _err(key, value, f"a table [{key}]")
            for sub, v in value.items():
                if sub not in _TABLES[key]:
                    raise ValueError(
                        f"{key}: unknown key {sub!r}; accepted keys: "
                        f"{', '.join(_TABLES[key])}"
                    )
                kw[_TABLES[key][sub]] = v
        else:
            kw[key] = value
    return kw


def load_study_file(path: str | Path) -> StudyConfig:
    """Read a study from a TOML file.

    Raises:
        OSError: the file cannot be read.
        ValueError: not TOML, or an unknown key or bad value (named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise OSError(f"--config: cannot read {str(path)!r}: {e.strerror}") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path.name}: not a valid TOML file: {e}") from None
    return StudyConfig.from_mapping(doc, source=path.name)


def _presets_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    """Names of the presets shipped with dropscale."""
    return sorted(p.stem for p in _presets_dir().glob("*.toml"))


def load_preset(name: str) -> StudyConfig:
    """A preset by name (``quick``, ``digits-full``, ...).

    Raises:
        ValueError: unknown name, listing the presets.
    """
    path = _presets_dir() / f"{name}.toml"
    if name not in preset_names():
        raise ValueError(
            f"--preset: unknown preset {name!r}; available: {', '.join(preset_names())}"
        )
    return load_study_file(path)


def definition_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two study definitions."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out
