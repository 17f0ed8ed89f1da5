"""The Ray executor: a local Ray instance with 2 CPUs runs a tiny study and
records the same results as the local executor."""

from __future__ import annotations

import pytest

from dropscale.study import StudyConfig, run_study
from dropscale.study.ledger import Ledger

ray = pytest.importorskip("ray")


def test_ray_executor_matches_local(tmp_path):
    config = StudyConfig(
        scalings=("inverted", "classic"),
        ps=(0.2, 0.5),
        seeds=2,
        epochs=1,
        model_options={"hidden": [8]},
        mc_samples=(1, 2),
        calibration_examples=32,
        group_size=4,
    )
    local = run_study(config, tmp_path / "local")
    remote = run_study(
        config.with_overrides(executor="ray"), tmp_path / "ray", ray_num_cpus=2
    )
    assert local.n_trials == remote.n_trials == 8
    with Ledger(tmp_path / "local") as a, Ledger(tmp_path / "ray") as b:
        ra = {r["key"]: r for r in a.results()}
        rb = {r["key"]: r for r in b.results()}
        executors = {
            e for (e,) in b._db.execute("SELECT DISTINCT executor FROM groups")
        }
    assert executors == {"ray"}
    assert ra.keys() == rb.keys()
    for key in ra:
        # the same groups run the same code: equal to the last bit
        assert ra[key]["metrics"] == rb[key]["metrics"], key
        assert ra[key]["sites"] == rb[key]["sites"], key
