"""Keep TensorFlow's start-up chatter off the user's terminal, for this process and its children.

`mnistopt/__init__.py` calls `install()`, so it runs before any part of mnistopt can import
TensorFlow (the CLI, the library, the bench's worker processes). Two layers are needed:

* the environment (inherited by child processes): ``TF_CPP_MIN_LOG_LEVEL=3`` hides TensorFlow's
  C++ log lines while it runs: converter notes, CPU-feature hints, and the ERROR lines of
  harmless version skew (tf.data's "NodeDef mentions attribute ..."); real failures still
  raise Python exceptions;
* the import itself: TensorFlow 2.19+ logs "oneDNN custom operations are on" and absl's
  "before absl::InitializeLog()" banner while its shared libraries load, whatever the
  environment says (tensorflow#100442); litert-torch's converter library carries the same
  code, and torch logs in the same format while litert-torch registers its types. The first
  import of each of `QUIET_IMPORTS` runs with the stderr file descriptor sent to a temp file;
  lines in these log formats are dropped and anything else (a Python warning, a fatal
  message) is written back to stderr.
  `quiet_stderr()` does the same around other native calls that print regardless
  (TFLiteConverter's quantizer, a LiteRT interpreter announcing its XNNPACK delegate).

``TF_ENABLE_ONEDNN_OPTS`` is left alone: turning the oneDNN kernels off would silence the
line too, but changes numerics and speed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
QUIET_IMPORTS = ("tensorflow", "litert_converter", "litert_torch")

_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "           # absl: I0000 00:00:1796.5  123 port.cc:153]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] "   # tsl: 2025-01-01 10:00:00.1: I x.cc:1]
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|fully_quantize: \d+, inference_type: "                    # TFLiteConverter's quantizer
    r"|INFO: Created TensorFlow Lite \w+ delegate for CPU\."      # LiteRT's interpreter
    r"|Failed to load \S*torchao\S*: Could not load this library"  # torchao's optional CUDA kernels
)


def chatter(line: str) -> bool:
    """True for a line TensorFlow logs on its own while starting up (INFO, WARNING, ERROR)."""
    return bool(_CHATTER.match(line))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Wraps the first import of each of QUIET_IMPORTS; off sys.meta_path once all were seen."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        self.names.discard(fullname)
        if not self.names:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            with quiet_stderr():
                exec_module(module)

        spec.loader.exec_module = quiet_exec
        return spec


class quiet_stderr:
    """A context in which what native code writes to stderr passes through `chatter()`."""

    def __enter__(self):
        sys.stderr.flush()
        try:
            self.saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to keep clean
            self.saved = None
            return self
        self.tmp = tempfile.TemporaryFile()
        os.dup2(self.tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            return False
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.tmp.seek(0)
        text = self.tmp.read().decode(errors="replace")
        self.tmp.close()
        kept = [line for line in text.splitlines(keepends=True) if not chatter(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False


def install() -> None:
    """Set the environment and arm the import filter (once; modules already loaded are left)."""
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    names = [n for n in QUIET_IMPORTS if n not in sys.modules]
    if names and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(names))
