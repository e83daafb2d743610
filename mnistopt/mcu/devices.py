"""Microcontroller classes, each a real part with its datasheet figures, and the fit check.

A model fits when
  RAM:   tensor arena (measured in TFLite Micro) + RAM_ALLOWANCE + the platform's own RAM
  flash: flatbuffer bytes + FLASH_ALLOWANCE + the platform's own flash
stay within the part's on-chip SRAM and flash. The allowances are estimates for a bare-metal
TFLite Micro application; they are printed with every table and can be overridden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError

KB = 1024
MB = 1024 * KB

# RAM beyond the arena: the main stack (~8 KB; TFLM kernels keep their scratch in the arena),
# the MicroInterpreter and op-resolver objects (~1-2 KB), the C runtime's .data/.bss, HAL
# handles and the application's own buffers. 24 KB covers a bare-metal or Zephyr/Mbed app
# that does little else; raise it (--ram-allowance) for anything with a radio stack.
RAM_ALLOWANCE = 24 * KB

# Flash beyond the model: the TFLite Micro interpreter and allocator (~35 KB of Cortex-M
# Thumb-2 at -Os), the kernels an MNIST CNN needs (conv, pool, mean, fully connected,
# reshape, quantize; ~20-60 KB with CMSIS-NN), vector table/startup/HAL/libc and the
# application (~30 KB). Rounded up to 128 KB so that "fits" means fits with a debug printf.
FLASH_ALLOWANCE = 128 * KB


@dataclass(frozen=True)
class DeviceClass:
    key: str
    part: str  # the concrete part the figures come from
    core: str
    ram: int  # on-chip SRAM a tensor arena can use (bytes)
    flash: int  # program flash (bytes)
    source: str  # where the figures come from
    platform_ram: int = 0  # RAM the vendor's SDK/RTOS takes before the application (bytes)
    platform_flash: int = 0  # flash the bootloader/SDK takes beyond FLASH_ALLOWANCE (bytes)
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.core} {self.ram // KB} KB / {_size(self.flash)}"


def _size(n: int) -> str:
    return f"{n // MB} MB" if n >= MB and n % MB == 0 else f"{n // KB} KB"


# Smallest first: the `edge` model is meant to fit the first one.
DEVICES: dict[str, DeviceClass] = {d.key: d for d in (
    DeviceClass(
        "m4-64k", "STM32L432KC", "Cortex-M4F 80 MHz", 64 * KB, 256 * KB,
        "ST datasheet DS11451 (STM32L432KB/KC): 256 KB flash, 64 KB SRAM (48 KB SRAM1 + 16 KB "
        "SRAM2, contiguous)",
        note="Nucleo-L432KC; the low-power small class"),
    DeviceClass(
        "m4-128k", "STM32F411RE", "Cortex-M4F 100 MHz", 128 * KB, 512 * KB,
        "ST datasheet DS10314 (STM32F411xC/xE): 512 KB flash, 128 KB SRAM",
        note="Nucleo-F411RE, 'Black Pill'"),
    DeviceClass(
        "m4-256k", "nRF52840", "Cortex-M4F 64 MHz", 256 * KB, 1 * MB,
        "Nordic nRF52840 Product Specification v1.7: 1 MB flash, 256 KB RAM",
        note="Arduino Nano 33 BLE Sense, TFLite Micro's reference board; a BLE stack "
             "(SoftDevice) takes part of both when used"),
    DeviceClass(
        "m7-512k", "STM32F767ZI", "Cortex-M7 216 MHz", 512 * KB, 2 * MB,
        "ST datasheet DS11532 (STM32F765xx/F767xx/F768Ax/F769xx): 2 MB flash, 512 KB SRAM "
        "(128 KB DTCM + 368 KB SRAM1 + 16 KB SRAM2, contiguous from 0x20000000)",
        note="Nucleo-F767ZI"),
    DeviceClass(
        "esp32-s3", "ESP32-S3-WROOM-1-N8", "Xtensa LX7 240 MHz", 512 * KB, 8 * MB,
        "Espressif ESP32-S3 Series Datasheet (512 KB internal SRAM) and ESP32-S3-WROOM-1 "
        "Datasheet (N8 variant: 8 MB quad SPI flash)",
        # ESP-IDF maps the instruction cache, IRAM code and FreeRTOS into that SRAM: without
        # Wi-Fi about 320-380 KB is left as heap. A Wi-Fi stack takes another ~60-100 KB.
        platform_ram=160 * KB,
        # Second-stage bootloader + partition table + NVS/PHY partitions sit before the app.
        platform_flash=64 * KB,
        note="ESP-IDF's default partition table caps an app at 1 MB: use a custom one for a "
             "larger model; -R8 variants add 8 MB PSRAM (not counted)"),
)}


@dataclass
class Fit:
    device: str
    part: str
    label: str
    ram_needed: int
    ram_available: int
    flash_needed: int
    flash_available: int

    @property
    def ram_headroom(self) -> int:
        return self.ram_available - self.ram_needed

    @property
    def flash_headroom(self) -> int:
        return self.flash_available - self.flash_needed

    @property
    def fits(self) -> bool:
        return self.ram_headroom >= 0 and self.flash_headroom >= 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(ram_headroom=self.ram_headroom, flash_headroom=self.flash_headroom, fits=self.fits)
        return d


def get_devices(keys: list[str] | None = None) -> list[DeviceClass]:
    if not keys:
        return list(DEVICES.values())
    unknown = [k for k in keys if k not in DEVICES]
    if unknown:
        raise ConfigError(f"unknown device class {', '.join(unknown)}; choose from: "
                          f"{', '.join(DEVICES)}")
    return [DEVICES[k] for k in keys]


def fit(arena: int, model_bytes: int, devices: list[DeviceClass] | None = None,
        ram_allowance: int = RAM_ALLOWANCE, flash_allowance: int = FLASH_ALLOWANCE) -> list[Fit]:
    """Fit of one model (its measured arena and flatbuffer size) on each device class."""
    return [Fit(d.key, d.part, d.label,
                ram_needed=arena + ram_allowance, ram_available=d.ram - d.platform_ram,
                flash_needed=model_bytes + flash_allowance,
                flash_available=d.flash - d.platform_flash)
            for d in (devices or list(DEVICES.values()))]
