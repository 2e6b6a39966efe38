"""The report opens in a real browser (headless Chromium) without console errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from leaf.report import build_report

pytestmark = pytest.mark.slow

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def chromium() -> str:
    """A headless-capable Chromium or Chrome on PATH; the test never installs one (see docs/report.md)."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless Chromium/Chrome on PATH (looked for {', '.join(BROWSERS)}); "
                "install one (Debian/Ubuntu: apt-get install chromium) to run the report's browser test")


def load_in_browser(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """Open ``page`` headless; return the DOM after scripts ran and the console messages."""
    profile.mkdir()
    proc = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return proc.stdout, console


def test_console_errors_are_caught_by_this_check(chromium, tmp_path):
    """Negative control: a page with a script error must be seen as failing."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p id="x">hi</p><script>no_such_function();</script></body></html>')
    dom, console = load_in_browser(chromium, bad, tmp_path / "profile")
    assert 'id="x"' in dom
    assert any("Uncaught ReferenceError" in line for line in console)


def test_report_renders_without_console_errors(chromium, run_folder, tmp_path):
    page = build_report(run=run_folder, out=tmp_path / "report.html")
    dom, console = load_in_browser(chromium, page, tmp_path / "profile")
    assert console == []
    assert 'data-ready="1"' in dom  # our script ran to its end
    for ident in ("detections", "samples", "counterfactuals", "training", "evaluation", "attention"):
        assert f'id="{ident}"' in dom
    assert dom.count('<img class="analysis"') == 2 and dom.count('<img class="chart"') == 4
    assert dom.index('id="summary"') < dom.index('id="detections"')
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in dom
