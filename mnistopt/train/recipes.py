"""Named training recipes: `mnistopt train --recipe NAME` fills in these values, and any option
given on the command line wins over the recipe's.

Each recipe stops on the validation split (`target_acc`) and its test accuracy is scored once,
afterwards, like every run: the recipe was chosen on validation accuracy, never on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    summary: str
    values: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields


RECIPES: dict[str, Recipe] = {
    # LeNet-5 (0.4 M multiply-adds, 1/39 of seed's) with big batches and a short one-cycle;
    # trained on all 60,000 images it reached 99.16 % test accuracy after epoch 4.
    "cpu-fast": Recipe(
        "fastest to 99 % on a CPU, any framework: lenet5, batch 128, 5-epoch one-cycle",
        dict(arch="lenet5", epochs=5, batch_size=128, lr=3e-3, schedule="onecycle", target_acc=0.99)),
    # The speed-run shape (big steps, Adam with short memories, one short one-cycle, no
    # augmentation) on the device-resident loop. Not yet measured on a GPU: tools/gpu_check.py
    # compares it with its neighbours there, picks on validation, and reports.
    "gpu-fast": Recipe(
        "fastest to 99 % on a GPU: torch fast loop, bf16, lenet5, batch 256, Adam (0.7, 0.9)",
        dict(framework="torch", device="gpu", loop="fast", arch="lenet5", epochs=2, batch_size=256,
             lr=1e-2, betas=(0.7, 0.9), schedule="onecycle", target_acc=0.99)),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe '{name}'; choose one of: {', '.join(RECIPES)}") from None


def with_recipe(name: str | None, given: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """`given` (TrainConfig keyword arguments) with the recipe's values for the keys the user
    did not set explicitly."""
    if not name:
        return dict(given)
    values = get_recipe(name).values
    return {**given, **{k: v for k, v in values.items() if k not in explicit}}
