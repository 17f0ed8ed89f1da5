"""Where trial groups run: in this process, or as tasks on a Ray cluster.

An executor takes the study and its pending groups and yields
``(results, seconds)`` per group as groups finish, in any order; the driver
records each group in the ledger as it arrives, so the ledger stays the
single record of what finished whichever executor ran it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from dropscale.study.config import StudyConfig, Trial
from dropscale.study.trial import TrialResult, load_data, run_group

__all__ = ["RAY_HINT", "local_executor", "ray_executor", "run_groups"]

log = logging.getLogger(__name__)

RAY_HINT = "pip install 'dropscale[ray]'"

Finished = tuple[list[TrialResult], float]


def local_executor(
    config: StudyConfig, groups: Sequence[Sequence[Trial]], data: Any = None
) -> Iterator[Finished]:
    """Run the groups one after the other in this process, on ``data`` (the
    study's data set, loaded here when not given)."""
    if data is None and groups:
        data = load_data(config)
    for group in groups:
        start = time.perf_counter()
        results = run_group(config, group, data)
        yield results, time.perf_counter() - start


def _remote_group(config_dict: dict[str, Any], trials: list[tuple]) -> Finished:
    """Body of one Ray task: rebuild the study and run one group."""
    config = StudyConfig.from_dict(config_dict)
    start = time.perf_counter()
    results = run_group(config, [Trial(*t) for t in trials])
    return results, time.perf_counter() - start


def ray_executor(
    config: StudyConfig,
    groups: Sequence[Sequence[Trial]],
    *,
    num_cpus: int | None = None,
) -> Iterator[Finished]:
    """Run every group as a Ray task (one CPU each), yielding as they finish.

    Connects to ``config.address`` when given, otherwise starts a local Ray
    instance (with ``num_cpus`` CPUs, default all) and shuts it down after.

    Raises:
        ValueError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ValueError(
            f"--executor ray needs Ray, which is not installed: {RAY_HINT}"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        if config.address:
            ray.init(address=config.address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    try:
        task = ray.remote(num_cpus=config.threads)(_remote_group)
        as_dict = config.as_dict()
        pending = [
            task.remote(as_dict, [(t.scaling, t.p, t.seed) for t in g]) for g in groups
        ]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


def run_groups(
    config: StudyConfig, groups: Sequence[Sequence[Trial]], **kwargs: Any
) -> Iterator[Finished]:
    """Dispatch to the executor named in ``config.executor`` (``data``, the
    loaded data set, is used by the local executor only)."""
    data = kwargs.pop("data", None)
    if config.executor == "ray":
        return ray_executor(config, groups, **kwargs)
    return local_executor(config, groups, data)
