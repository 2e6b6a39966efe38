"""The report opens in a real browser (headless Chromium) without console errors."""

from __future__ import annotations

import os
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


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _find_chromium()
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired):
            pass
        found = _find_chromium()
    if found is None:
        pytest.skip(
            "headless Chromium is not installed and cannot be installed here (needs root and apt-get): "
            "`apt-get install chromium` to run the browser test of the report"
        )
    return found


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
    assert dom.count("<img ") == 2 and dom.count("<polyline") == 8
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in dom
