"""A self-contained HTML report of what finpulse stored: ``finpulse report --since 7d``.

``data.py`` reads the database (sentiment and volume per ticker, alerts with their evidence
posts, the model in use and its quality figures); ``html.py`` renders one HTML file with
plotly's JavaScript inlined, so it opens anywhere without a network.
"""

from __future__ import annotations

from finpulse.report.data import ReportData, TimeRange, load_report_data, resolve_range
from finpulse.report.html import render_html, write_report

__all__ = ["ReportData", "TimeRange", "load_report_data", "render_html", "resolve_range", "write_report"]
