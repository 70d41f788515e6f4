"""Reports from the results store: collect -> summarise -> plot -> render (markdown, HTML, JSON)."""

from reports.build import build_report, report_json
from reports.collect import load_history, load_results
from reports.tables import comparison_table

__all__ = ["build_report", "comparison_table", "load_history", "load_results", "report_json"]
