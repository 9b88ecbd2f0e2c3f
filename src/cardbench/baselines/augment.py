"""Random augmentation of a training batch, on the batch's device (torch).

Re-implements the semantics of fastai v1 ``get_transforms`` used by the seed
(``get_transforms(do_flip=True, max_rotate=90, max_lighting=.4, max_zoom=1.2)``, fastai 1.0.60
documentation, vision.transform), without fastai:

* flips: with ``flip_vert`` one of the 8 dihedral symmetries (flips and 90 degree turns), chosen
  uniformly; else a left-right flip with p 0.5;
* rotation by an angle uniform in [-max_rotate, max_rotate] degrees, with probability p_affine;
* zoom by a factor uniform in [1, max_zoom] towards a random centre, with probability p_affine;
* lighting with probability p_lighting: brightness ``sigmoid(logit(x) + logit(b))``,
  b uniform in [0.5 - max_lighting/2, 0.5 + max_lighting/2], then contrast
  ``sigmoid(logit(x) * c)``, c log-uniform in [1 - max_lighting, 1/(1 - max_lighting)].

Not reproduced: fastai's random perspective warp (``max_warp=0.2``). Geometric transforms are one
affine resampling (bilinear for images, nearest for labels, zeros/background outside).
All random numbers come from the given ``torch.Generator`` (CPU), so a seed fixes everything.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cardbench.baselines.config import AugmentConfig

_EPS = 1e-6


def _uniform(gen, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def sample_affine(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """``(n, 2, 3)`` affine matrices (float64) mapping output to input coordinates in
    ``affine_grid``'s normalised [-1, 1] convention (x = column, y = row)."""
    theta = torch.zeros((n, 2, 3), dtype=torch.float64)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    # dihedral / flip
    if cfg.flip and cfg.flip_vert:
        k = torch.randint(0, 8, (n,), generator=gen)
        fx = torch.where((k & 1).bool(), -1.0, 1.0).double()
        fy = torch.where((k & 2).bool(), -1.0, 1.0).double()
        swap = (k & 4).bool()
    elif cfg.flip:
        fx = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
        fy = torch.ones(n, dtype=torch.float64)
        swap = torch.zeros(n, dtype=torch.bool)
    else:
        fx = torch.ones(n, dtype=torch.float64)
        fy = torch.ones(n, dtype=torch.float64)
        swap = torch.zeros(n, dtype=torch.bool)
    d = torch.zeros((n, 2, 2), dtype=torch.float64)
    d[:, 0, 0] = torch.where(swap, 0.0, fx)
    d[:, 0, 1] = torch.where(swap, fx, 0.0)
    d[:, 1, 0] = torch.where(swap, fy, 0.0)
    d[:, 1, 1] = torch.where(swap, 0.0, fy)
    # rotation and zoom (each with p_affine, as fastai's rotate and rand_zoom)
    use_rot = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.p_affine
    ang = _uniform(gen, n, -cfg.max_rotate, cfg.max_rotate) * math.pi / 180.0
    ang = torch.where(use_rot, ang, torch.zeros_like(ang))
    use_zoom = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.p_affine
    zoom = _uniform(gen, n, 1.0, max(1.0, cfg.max_zoom))
    zoom = torch.where(use_zoom, zoom, torch.ones_like(zoom))
    cx = _uniform(gen, n, -1.0, 1.0) * (1 - 1 / zoom)
    cy = _uniform(gen, n, -1.0, 1.0) * (1 - 1 / zoom)
    cos, sin = torch.cos(ang), torch.sin(ang)
    r = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    m = (r / zoom[:, None, None]) @ d
    theta[:, :, :2] = m
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return theta


def sample_lighting(n: int, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit brightness shift, contrast scale), each ``(n,)`` float64; identity where not applied."""
    ml = min(max(cfg.max_lighting, 0.0), 0.99)
    use = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.p_lighting
    b = _uniform(gen, n, 0.5 - ml / 2, 0.5 + ml / 2)
    shift = torch.log(b / (1 - b))
    lo, hi = math.log(1 - ml), math.log(1 / (1 - ml))
    scale = torch.exp(_uniform(gen, n, lo, hi))
    use2 = torch.rand(n, generator=gen, dtype=torch.float64) < cfg.p_lighting
    shift = torch.where(use, shift, torch.zeros_like(shift))
    scale = torch.where(use2, scale, torch.ones_like(scale))
    return shift, scale


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator):
    """Augment a batch.

    Args:
        x: images ``(B, 1, S, S)`` float in [0, 1].
        y: targets ``(B, S, S)`` integer channel indices.
        cfg: augmentation settings (``enabled: false`` returns the inputs unchanged).
        gen: CPU random generator (all draws come from it, in a fixed order).

    Returns:
        (x, y) augmented, same shapes and dtypes (y as int64).
    """
    if not cfg.enabled:
        return x, y.long()
    n = x.shape[0]
    theta = sample_affine(n, cfg, gen).to(device=x.device, dtype=torch.float32)
    shift, scale = sample_lighting(n, cfg, gen)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    xf = x.float()
    xa = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ya = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                       align_corners=False)[:, 0].round().long()
    if cfg.max_lighting > 0 and cfg.p_lighting > 0:
        s = shift.to(device=x.device, dtype=torch.float32).view(n, 1, 1, 1)
        c = scale.to(device=x.device, dtype=torch.float32).view(n, 1, 1, 1)
        xa = xa.clamp(_EPS, 1 - _EPS)
        xa = torch.sigmoid((torch.log(xa) - torch.log1p(-xa) + s) * c)
    return xa.to(x.dtype), ya
