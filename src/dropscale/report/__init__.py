"""Reports of a study: figures, the Markdown and HTML documents, rebuilt from
the ledger alone by :func:`build_report`."""

from dropscale.report.build import ReportPaths, build_report
from dropscale.report.figures import plot_eval_scale, plot_mc, plot_metric_vs_p

__all__ = [
    "ReportPaths",
    "build_report",
    "plot_eval_scale",
    "plot_mc",
    "plot_metric_vs_p",
]
