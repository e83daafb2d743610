"""One exception hierarchy. The CLI prints any `MnistoptError` as one line and exits 2.

Everything a *user* can get wrong (a path, a shape, a corrupt file, a missing extra) raises a
subclass of `MnistoptError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MnistoptError(Exception):
    """Base of every user-facing error."""

    exit_code = 2


class DataError(MnistoptError):
    """MNIST could not be read or fetched."""


class IdxFormatError(DataError):
    """An IDX file is truncated, has the wrong magic number or the wrong dimensions."""


class ChecksumError(DataError):
    """Bytes on disk do not match the published or recorded checksum."""


class UnsafePickleError(DataError):
    """A pickle names a global outside the numpy array-reconstruction allow-list."""


class MissingExtraError(MnistoptError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str, what: str = ""):
        self.module, self.extra = module, extra
        purpose = f" for {what}" if what else ""
        super().__init__(
            f"'{module}' is not installed{purpose}: pip install 'mnistopt[{extra}]'"
        )


class ConfigError(MnistoptError):
    """Bad arguments: unknown arch/framework/format, epochs <= 0, and so on."""


class RunError(MnistoptError):
    """A run directory is missing, incomplete or unreadable."""


class ExportError(MnistoptError):
    """A model could not be converted."""


class ValidationError(ExportError):
    """An exported model does not say what its native model says. Carries the numbers."""

    def __init__(self, message: str, report: dict | None = None):
        self.report = report or {}
        super().__init__(message)


class ShapeMismatchError(ValidationError):
    """Exported and native outputs differ in shape."""


class ToleranceError(ValidationError):
    """Outputs differ by more than the path's declared tolerance."""


class ModelLoadError(MnistoptError):
    """A model file is missing, truncated, not a model, or not an MNIST classifier."""


class InputError(MnistoptError):
    """Images given to the runtime have the wrong shape, dtype or values."""


class DeviceError(MnistoptError):
    """The requested device (GPU, ARM target) is not available."""


class McuError(MnistoptError):
    """A model cannot run on a microcontroller (not int8, an operator TFLite Micro lacks)."""


def require(module: str, extra: str, what: str = ""):
    """Import `module` or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only a missing top-level package is the user's to fix; a broken install is a bug.
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise MissingExtraError(module, extra, what) from None
