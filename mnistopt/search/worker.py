"""`python -m mnistopt.search.worker CONFIG.json INDEX`: one of `mnistopt search --workers N`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ..errors import MnistoptError
    from .study import config_from_json, work

    spec, index = (argv if argv is not None else sys.argv[1:])[:2]
    cfg = config_from_json(json.loads(Path(spec).read_text()))
    cfg.progress = False
    try:
        work(cfg, int(index))
    except MnistoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
