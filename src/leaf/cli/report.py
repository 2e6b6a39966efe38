"""``leaf report``: one static HTML page of a run folder."""

from leaf.cli import Command

COMMAND = Command(
    "report",
    "build one static HTML page (no server, no external assets) of a run folder",
    config="leaf.report.config:ReportConfig",
    run="leaf.report:write_report",
)
