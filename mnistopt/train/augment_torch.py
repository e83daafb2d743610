"""Random shifts and rotations of a whole batch at once, with torch's affine_grid/grid_sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, gen: torch.Generator, max_deg: float = 10.0, max_shift: float = 2.0) -> torch.Tensor:
    """Rotate each image by up to +-max_deg degrees and shift it by up to +-max_shift pixels.

    `affine_grid` turns one 2x3 matrix per image into a sampling grid (for every output pixel,
    where to read in the input, in coordinates running from -1 to 1 across the image, so the
    rotation is about the centre); `grid_sample` reads there with bilinear interpolation,
    black (0) outside. Two kernels for the whole batch, no Python per image.
    """
    n = x.shape[0]
    # Random numbers from the trainer's seeded generator, on the generator's device: a CPU
    # one is reproducible on any device, a device one never waits on a copy from the host.
    r = torch.rand(n, 3, generator=gen, device=gen.device) * 2 - 1  # U(-1, 1)
    theta = r[:, 0] * math.radians(max_deg)
    shift = r[:, 1:] * (2 * max_shift / x.shape[-1])  # pixels -> [-1, 1] units
    cos, sin = torch.cos(theta), torch.sin(theta)
    mat = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                       torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x.device, x.dtype)  # (N, 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
