"""The HTML report: every metric of a run, with the privacy guarantee, plots and definitions, in one offline file.

>>> from dpsynth.report import build_report   # doctest: +SKIP
>>> build_report(RunDir(Path("runs/a")))       # doctest: +SKIP
PosixPath('runs/a/report.html')
"""

from dpsynth.report.build import build_report, render_report

__all__ = ["build_report", "render_report"]
