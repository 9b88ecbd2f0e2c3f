"""Synthetic short-axis label volumes with realistic segmentation errors (for benchmarks only).

Shapes and sizes follow an adult heart on a cine SAX stack: LV cavity radius about 25 mm at the
base shrinking to the apex, myocardium about 9 mm thick, an RV crescent next to the septum, on a
256 x 256 x 10 grid of 1.4 x 1.4 x 8 mm. Predictions copy the reference shape with the errors a
real model makes: boundary jitter (a different random wobble of each contour), an in-plane shift of
one to three pixels, a lost apical slice, and spurious blobs far from the heart.

Arrays are ``(x, y, slice)`` uint8 with cardbench labels (0 bg, 1 LV, 2 MY, 3 RV).
"""

from __future__ import annotations

import numpy as np

SHAPE = (256, 256, 10)
SPACING = (1.4, 1.4, 8.0)


def _contour_radius(theta: np.ndarray, r0: float, wobble: np.ndarray, phase: np.ndarray) -> np.ndarray:
    r = np.full_like(theta, r0)
    for k, (a, p) in enumerate(zip(wobble, phase), start=2):
        r += r0 * a * np.cos(k * theta + p)
    return r


def heart(params: dict, rng: np.random.Generator | None = None, jitter: float = 0.0,
          shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """Label volume for one heart; ``jitter`` adds a random wobble (fraction of the radius) per contour."""
    nx, ny, nz = shape
    sx, sy, _ = spacing
    x = (np.arange(nx) - params["cx"]) * sx
    y = (np.arange(ny) - params["cy"]) * sy
    X, Y = np.meshgrid(x, y, indexing="ij")
    c, s = np.cos(params["rot"]), np.sin(params["rot"])
    U = (c * X + s * Y) / params["ecc"]
    V = (-s * X + c * Y) * params["ecc"]
    rho = np.hypot(U, V)
    theta = np.arctan2(V, U)
    out = np.zeros(shape, np.uint8)
    for z in range(nz):
        f = params["taper"][z]
        if f <= 0:
            continue
        wob = params["wobble"] + (rng.normal(0, jitter, 4) if jitter else 0)
        ph = params["phase"] + (rng.normal(0, 0.3, 4) if jitter else 0)
        r_lv = _contour_radius(theta, params["r_lv"] * f, wob, ph)
        r_my = _contour_radius(theta, params["r_lv"] * f + params["wall"], wob * 0.7, ph)
        sl = out[:, :, z]
        if params["rv"][z]:
            du = U + params["rv_offset"]
            rv = (np.hypot(du / 1.6, V) < params["r_rv"] * f) & (rho >= r_my + 1.5)
            sl[rv] = 3
        sl[rho < r_my] = 2
        sl[rho < r_lv] = 1
    return out


def random_params(rng: np.random.Generator, phase: str = "ED", shape=SHAPE) -> dict:
    nz = shape[2]
    n_apex = int(rng.integers(nz - 2, nz + 1))  # slices holding myocardium
    z = np.arange(nz) / max(n_apex - 1, 1)
    taper = np.where(np.arange(nz) < n_apex, np.sqrt(np.clip(1 - (0.9 * z) ** 2, 0, 1)), 0.0)
    scale = 1.0 if phase == "ED" else 0.72
    return {
        "cx": shape[0] / 2 + rng.normal(0, 12), "cy": shape[1] / 2 + rng.normal(0, 12),
        "rot": rng.uniform(0, np.pi), "ecc": rng.uniform(1.0, 1.25),
        "r_lv": rng.uniform(20, 30) * scale, "wall": rng.uniform(7, 11) * (1.0 if phase == "ED" else 1.3),
        "r_rv": rng.uniform(32, 42) * scale, "rv_offset": rng.uniform(30, 40),
        "rv": np.arange(nz) < n_apex - 2,
        "taper": taper, "wobble": rng.normal(0, 0.03, 4), "phase": rng.uniform(0, 2 * np.pi, 4),
    }


def predict(params: dict, rng: np.random.Generator, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """A prediction of the heart ``params`` with realistic errors (see module docstring)."""
    p = dict(params)
    p["cx"] = p["cx"] + rng.integers(-3, 4)
    p["cy"] = p["cy"] + rng.integers(-3, 4)
    p["r_lv"] = p["r_lv"] * rng.uniform(0.92, 1.08)
    p["wall"] = p["wall"] * rng.uniform(0.85, 1.15)
    out = heart(p, rng, jitter=0.02, shape=shape, spacing=spacing)
    if rng.random() < 0.5:  # lost apical slice
        nonempty = np.flatnonzero(out.any(axis=(0, 1)))
        if nonempty.size > 1:
            out[:, :, nonempty[-1]] = 0
    if rng.random() < 0.3:  # spurious blobs
        for _ in range(int(rng.integers(1, 3))):
            z = int(rng.integers(0, shape[2]))
            cx, cy = rng.integers(20, shape[0] - 20), rng.integers(20, shape[1] - 20)
            r = rng.uniform(2, 5)
            xx, yy = np.ogrid[:shape[0], :shape[1]]
            blob = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            out[:, :, z][blob & (out[:, :, z] == 0)] = int(rng.integers(1, 4))
    return out


def case_pair(seed: int, phase: str = "ED") -> tuple[np.ndarray, np.ndarray]:
    """(reference, prediction) for one case, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    params = random_params(rng, phase)
    ref = heart(params)
    pred = predict(params, rng)
    return ref, pred
