"""Procedural road scenes written in the IDD-lite layout, so the demo and tests run the real loader.

Deterministic from a seed. Each scene has sky, far objects (buildings) on the horizon, a road trapezoid towards a
vanishing point, non-drivable verges, poles, vehicles, pedestrians and a small ignore patch; colours are jittered
and noised so that the task is learnable but not trivial.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from orchestrator.errors import SegsweepError

MARKER = ".segsweep-synthetic.json"
# class id -> base RGB colour (IDD-lite level-1 ids)
COLOURS = {0: (90, 90, 95), 1: (110, 140, 70), 2: (200, 60, 60), 3: (40, 60, 160), 4: (200, 180, 60),
           5: (150, 120, 110), 6: (120, 170, 230)}


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.full((h, w), 1, np.uint8)  # non-drivable ground
    horizon = int(h * rng.uniform(0.3, 0.45))
    label[:horizon] = 6
    x = 0
    while x < w:  # buildings / far objects standing on the horizon
        bw = int(rng.integers(w // 12, w // 4))
        top = int(horizon * rng.uniform(0.2, 0.9))
        if rng.random() < 0.7:
            label[top:horizon + 2, x:x + bw] = 5
        x += bw
    ys, xs = np.mgrid[0:h, 0:w]
    vx = w * rng.uniform(0.35, 0.65)
    left, right = w * rng.uniform(-0.3, 0.2), w * rng.uniform(0.8, 1.3)
    t = np.clip((ys - horizon) / max(1, h - horizon), 0, 1)
    road = (ys > horizon) & (xs > vx + (left - vx) * t) & (xs < vx + (right - vx) * t)
    label[road] = 0
    for _ in range(int(rng.integers(1, 4))):  # poles at the road side
        px = int(rng.choice([rng.uniform(0, 0.2), rng.uniform(0.8, 1.0)]) * (w - 3))
        label[int(horizon * rng.uniform(0.5, 0.9)):int(h * rng.uniform(0.6, 0.95)), px:px + max(2, w // 60)] = 4
    for _ in range(int(rng.integers(1, 4))):  # vehicles on the road
        cy = int(rng.uniform(horizon + 0.2 * (h - horizon), h - 4))
        size = (cy - horizon) / max(1, h - horizon)
        vh, vw = max(3, int(size * h * 0.25)), max(4, int(size * w * 0.3))
        cx = int(vx + rng.uniform(-0.5, 0.5) * (right - left) * size)
        label[max(0, cy - vh):cy, max(0, cx - vw // 2):max(0, cx + vw // 2)] = 3
    for _ in range(int(rng.integers(0, 3))):  # pedestrians on the verge
        cy = int(rng.uniform(horizon + 4, h - 2))
        px = int(rng.uniform(0, 0.15) * w) if rng.random() < 0.5 else int(rng.uniform(0.85, 0.97) * w)
        ph = max(4, int((cy - horizon) * 0.4))
        label[max(0, cy - ph):cy, px:px + max(2, ph // 3)] = 2
    iy, ix = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
    label[iy:iy + 3, ix:ix + 3] = 255  # a little "misc" that must be ignored

    image = np.zeros((h, w, 3), np.float32)
    for cls, colour in COLOURS.items():
        jitter = rng.normal(0, 12, 3)
        image[label == cls] = np.clip(np.array(colour) + jitter, 0, 255)
    image[label == 255] = rng.uniform(0, 255, 3)
    shade = np.linspace(0.85, 1.1, h)[:, None, None]
    image = np.clip(image * shade + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    return image, label


def generate_synthetic(root: Path, train: int, val: int, height: int, width: int, seed: int = 0) -> Path:
    """Write (or reuse) a synthetic IDD-lite tree under ``root/idd20k_lite``; returns ``root``.

    Refuses to write into a non-empty folder that it did not create, so user data is never overwritten.
    """
    root = Path(root)
    params = {"train": train, "val": val, "height": height, "width": width, "seed": seed, "version": 1}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise SegsweepError(f"{root}: not empty and not a segsweep synthetic dataset; point data.root elsewhere")
    rng = np.random.default_rng(seed)
    base = root / "idd20k_lite"
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            # drive folders and frame ids in IDD's mixed styles: the loader must not assume a pattern
            drive = ("0", "119", "scene7")[i % 3]
            frame = (f"{i:06d}", f"frame{i}", f"{i:07d}")[i % 3]
            image, label = _scene(rng, height, width)
            (base / "leftImg8bit" / split / drive).mkdir(parents=True, exist_ok=True)
            (base / "gtFine" / split / drive).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(base / "leftImg8bit" / split / drive / f"{frame}_image.jpg", quality=92)
            Image.fromarray(label).save(base / "gtFine" / split / drive / f"{frame}_label.png")
    marker.write_text(json.dumps(params))
    return root
