"""The microcontroller target: int8 TFLite models in TFLite Micro, RAM/flash fit, C arrays.

`evaluate(path)` -> `McuReport` (accuracy and LiteRT agreement in the real TFLite Micro
interpreter, arena, flash, operators, fit per device class); `write_c_array(path, out_dir)`
writes the model as a C source/header pair for firmware. numpy is the only import here;
tflite-micro (extra `mcu`) and ai-edge-litert are imported when a model is run.
"""

from __future__ import annotations

from .devices import DEVICES, FLASH_ALLOWANCE, RAM_ALLOWANCE, DeviceClass, fit
from .micro import McuReport, evaluate, inspect

__all__ = ["DEVICES", "DeviceClass", "FLASH_ALLOWANCE", "RAM_ALLOWANCE", "McuReport", "evaluate",
           "fit", "inspect"]
