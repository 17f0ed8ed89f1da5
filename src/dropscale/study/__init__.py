"""The study: train the same model under several scaling conventions."""

from dropscale.study.config import StudyConfig, Trial
from dropscale.study.runner import StudyOutcome, run_study

__all__ = ["StudyConfig", "StudyOutcome", "Trial", "run_study"]
