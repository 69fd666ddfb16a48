"""The HTML leaderboard opened in headless Chromium (skipped where Chromium is not installed:
`apt-get install chromium`)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

BASELINE = Path(__file__).parent / "baselines" / "regression"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_html_leaderboard_renders_table_in_headless_chromium(tmp_path):
    from analysis import leaderboard

    assert leaderboard.main(argparse.Namespace(results=[str(BASELINE)], out=str(tmp_path), metric="acc",
                                               alpha=0.05)) == 0
    page = tmp_path / "leaderboard.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "<table" in dom and "sakura_gender" in dom and "sakura_animal" in dom
    shot = tmp_path / "leaderboard.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,500", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 1000
