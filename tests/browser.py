"""Headless Chromium for the tests: Debian's ``chromium``, driven by Playwright (PyPI).

Playwright's own browser builds come from a CDN (``playwright install``), which CI cannot
reach, so the browser is Debian's. Where it comes from, in this order:

1. ``CHROMIUM``: the path of a Chromium (or Chrome) binary;
2. ``chromium`` (or ``chromium-browser``) on PATH, e.g. Debian's ``/usr/bin/chromium``;
3. installed here, when running as root with apt-get: ``apt-get install chromium`` (after
   ``apt-get update`` if the package lists are missing), as the pgTAP set-up fetches pgTAP.

Otherwise the test fails, saying how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = ["chromium", "fonts-liberation"]  # the fonts: readable screenshots on a bare machine
HOW_TO = (
    "Install Debian's Chromium (as root: apt-get update && apt-get install -y chromium), or set "
    "CHROMIUM to the path of a Chromium or Chrome binary."
)


class BrowserUnavailable(RuntimeError):
    pass


def _found() -> str | None:
    given = os.environ.get("CHROMIUM")
    if given:
        if not Path(given).is_file() or not os.access(given, os.X_OK):
            raise BrowserUnavailable(f"CHROMIUM={given} is not an executable file. {HOW_TO}")
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _apt_install() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        capture_output=True,
        text=True,
        env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        timeout=900,
    )


def chromium() -> str:
    """The path of a Chromium binary, installing Debian's package if need be (and allowed)."""
    found = _found()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BrowserUnavailable(
            "no Chromium here, and it cannot be installed by the tests (that needs root and "
            f"apt-get). {HOW_TO}"
        )
    done = _apt_install()
    if done.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        done = _apt_install()
    found = _found()
    if done.returncode != 0 or not found:
        raise BrowserUnavailable(
            f"`apt-get install {' '.join(PACKAGES)}` failed:\n{done.stderr.strip()[-2000:]}\n"
            f"{HOW_TO}"
        )
    return found
