"""Headless Chromium through Playwright, with the system's browser (never a download).

`chromium_path()` finds the browser (``$MNISTOPT_CHROMIUM``, else Debian's ``chromium`` and the
usual names on PATH); `launch()` starts it headless in a fresh profile with everything that
would reach the network off (the page needs nothing but 127.0.0.1). Playwright is the `web`
extra, imported only here.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import DeviceError, require

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Background services (updates, sync, safe browsing, QUIC probes) would try the network.
ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
        "--no-default-browser-check", "--mute-audio"]


def chromium_path() -> Path:
    """The Chromium (or Chrome) executable; DeviceError saying where it looked."""
    env = os.environ.get("MNISTOPT_CHROMIUM")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return Path(env)
        raise DeviceError(f"MNISTOPT_CHROMIUM={env} is not an executable file")
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise DeviceError("no Chromium found (looked for $MNISTOPT_CHROMIUM and "
                      f"{', '.join(NAMES)} on PATH): apt-get install chromium")


def launch_args() -> list[str]:
    # Chromium's sandbox needs user namespaces, which root (containers, CI) does not get.
    return ARGS + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])


@contextmanager
def browser(path: Path | None = None):
    """A headless Chromium `playwright.sync_api.Browser`, closed on exit."""
    sync_api = require("playwright.sync_api", "web", "running models in Chromium")
    exe = Path(path) if path else chromium_path()
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=str(exe), args=launch_args(), headless=True)
        except sync_api.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeviceError(f"{exe} did not start under Playwright: {first}") from None
        try:
            yield b
        finally:
            b.close()


def version(b) -> str:
    """'Chromium 156.0.8078.114'-like name of a launched browser."""
    return f"{b.browser_type.name.capitalize()} {b.version}"
