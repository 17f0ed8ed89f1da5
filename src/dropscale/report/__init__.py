"""Reports of a study: tables, figures and the Markdown document."""

from dropscale.report.figures import plot_metric_vs_p
from dropscale.report.markdown import render_markdown

__all__ = ["plot_metric_vs_p", "render_markdown"]
