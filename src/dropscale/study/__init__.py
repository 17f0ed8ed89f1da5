"""The study: train the same model under several scaling conventions.

See :mod:`dropscale.study.config` for the study file, :mod:`.registry` to add
data sets and models, :mod:`.trial` for what is measured, :mod:`.ledger` for
resuming, :mod:`.executors` for Ray.
"""

from dropscale.study.config import (
    StudyConfig,
    Trial,
    load_preset,
    load_study_file,
    preset_names,
)
from dropscale.study.runner import StudyOutcome, run_study
from dropscale.study.trial import TrialResult, run_group, run_trial

__all__ = [
    "StudyConfig",
    "StudyOutcome",
    "Trial",
    "TrialResult",
    "load_preset",
    "load_study_file",
    "preset_names",
    "run_group",
    "run_study",
    "run_trial",
]
