"""Self-contained HTML reports of a run folder (``dnnzip auto`` / ``dnnzip compress``)."""
from dnnzip.report.render import render_run

__all__ = ["render_run"]
