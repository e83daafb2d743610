"""Where commands put and look for runs and artifacts when no path is given."""

from __future__ import annotations

import os
from pathlib import Path


def workspace() -> Path:
    """``$MNISTOPT_WORKSPACE`` or ``./workspace``: runs/ (trained models), reports/."""
    return Path(os.environ.get("MNISTOPT_WORKSPACE", "workspace")).expanduser()
