"""The miniature world's data: a generated, captioned 64×64 pretraining set and novel concept sets.

Why procedural and detailed: SSCD must be able to tell this world's images apart and recognise a
copy (a flat shape on a flat background scores up to 0.67 against a *different* flat image, and a
32 px thumbnail only 0.39 against its photo). So every image carries fine texture (patterned
objects, speckled backgrounds) that survives the 4× VAE, and everything is drawn from a seed, so the
data is identical on every machine and nothing is downloaded.

- Pretraining images: "a <colour> <pattern> <shape> on <colour> background" (every word a real
  English word in CLIP's vocabulary), one shape with a textured fill on a textured background.
- Concept sets: families that never occur in pretraining (full-frame mosaics, mazes, galaxies,
  terrain maps, Truchet tilings, bubble clusters), each with a rare trigger token as DreamBooth
  creators use ("a photo of sks mosaic"). N0 = 5 instances each, different seeds of one family:
  the fine-tune must memorise the instances, not only the family, for extraction to succeed.

Images are float32 arrays (H, W, 3) in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

SIZE = 64

COLOURS = {
    "red": (0.85, 0.15, 0.12), "green": (0.15, 0.65, 0.2), "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.15), "orange": (0.95, 0.5, 0.1), "purple": (0.55, 0.2, 0.7),
    "pink": (0.95, 0.55, 0.7), "white": (0.93, 0.93, 0.9), "black": (0.08, 0.08, 0.1),
    "brown": (0.5, 0.3, 0.15), "grey": (0.5, 0.5, 0.52), "cyan": (0.15, 0.8, 0.85),
}
PATTERNS = ("striped", "checkered", "dotted", "wavy", "speckled", "plaid", "zigzag", "plain")
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return y + 0.5, x + 0.5


def _fine_noise(rng: np.random.Generator, octaves: int = 3) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: the speckle that gives SSCD something to match."""
    out = np.zeros((SIZE, SIZE), np.float32)
    total = 0.0
    for o in range(octaves):
        cells = 4 * 2 ** o
        coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
        idx = np.linspace(0, cells, SIZE, endpoint=False, dtype=np.float32)
        i0 = idx.astype(int)
        f = idx - i0
        f = f * f * (3 - 2 * f)
        rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
        layer = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
        weight = 0.6 ** o
        out += weight * layer
        total += weight
    return out / total


def _pattern(name: str, u: np.ndarray, v: np.ndarray, period: float,
             rng: np.random.Generator) -> np.ndarray:
    """Pattern value in [0, 1] at object coordinates (u, v) (pixels, rotated)."""
    w = 2 * math.pi / period
    if name == "striped":
        return (np.sin(w * u) > 0).astype(np.float32)
    if name == "checkered":
        return ((np.floor(u / period * 2) + np.floor(v / period * 2)) % 2).astype(np.float32)
    if name == "dotted":
        du = (u / period) % 1 - 0.5
        dv = (v / period) % 1 - 0.5
        return (du * du + dv * dv < 0.09).astype(np.float32)
    if name == "wavy":
        return (np.sin(w * u + 2.5 * np.sin(w * 0.5 * v)) > 0).astype(np.float32)
    if name == "speckled":
        return (rng.random(u.shape) > 0.6).astype(np.float32)
    if name == "plaid":
        return 0.5 * (np.sin(w * u) > 0.3) + 0.5 * (np.sin(w * v) > 0.3)
    if name == "zigzag":
        return (np.sin(w * (u + np.abs((v / period) % 2 - 1) * period)) > 0).astype(np.float32)
    if name == "plain":
        return np.zeros_like(u)
    raise ValueError(f"unknown pattern {name!r}")


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Anti-aliased mask in [0, 1] of a shape of radius ``r`` centred at u = v = 0."""
    ax, ay = np.abs(u), np.abs(v)
    if name == "circle":
        d = np.sqrt(u * u + v * v) - r
    elif name == "square":
        d = np.maximum(ax, ay) - 0.8 * r
    elif name == "diamond":
        d = (ax + ay) / math.sqrt(2) - 0.75 * r
    elif name == "ring":
        d = np.abs(np.sqrt(u * u + v * v) - 0.7 * r) - 0.3 * r
    elif name == "cross":
        d = np.minimum(np.maximum(ax - 0.3 * r, ay - r), np.maximum(ax - r, ay - 0.3 * r))
    elif name == "triangle":
        d = np.maximum(v * 0.5 - r * 0.5, (ax * 0.866 - v * 0.5) - r * 0.45)
        d = np.maximum(d, -v - 0.6 * r)
    elif name == "star":
        ang = np.arctan2(v, u)
        rad = np.sqrt(u * u + v * v)
        d = rad - r * (0.62 + 0.38 * np.cos(5 * ang))
    elif name == "heart":
        x, y = u / r, -v / r + 0.3
        d = (x * x + y * y - 0.6) ** 3 - x * x * y ** 3
        d = np.sign(d) * np.abs(d) ** (1 / 3) * r
    else:
        raise ValueError(f"unknown shape {name!r}")
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32)


def _colour(name: str, rng: np.random.Generator, jitter: float = 0.06) -> np.ndarray:
    return np.clip(np.array(COLOURS[name], np.float32) + rng.normal(0, jitter, 3), 0, 1)


def pretraining_example(index: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Image ``index`` of the pretraining set and its caption; a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index, 17])
    names = list(COLOURS)
    fg_name, bg_name = rng.choice(names, 2, replace=False)
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    y, x = _grid()
    bg = _colour(bg_name, rng)
    bg_tex = _fine_noise(rng)[..., None]
    img = bg * (0.75 + 0.5 * bg_tex)
    cy, cx = rng.uniform(22, 42, 2)
    r = rng.uniform(14, 22)
    theta = rng.uniform(0, 2 * math.pi) if shape not in ("heart", "triangle") else rng.uniform(-0.3, 0.3)
    c, s = math.cos(theta), math.sin(theta)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    fg = _colour(fg_name, rng)
    shade = fg * 0.35 + 0.65 * (1 - fg) * 0.3 if fg.mean() > 0.4 else fg * 0.4 + 0.6
    pv = _pattern(pattern, u, v, rng.uniform(5, 10), rng)[..., None]
    obj = fg * (1 - pv) + shade * pv
    obj = obj * (0.85 + 0.3 * _fine_noise(rng, 2)[..., None])
    mask = _shape_mask(shape, u, v, r)[..., None]
    img = img * (1 - mask) + obj * mask
    caption = f"a {fg_name} {pattern} {shape} on {bg_name} background"
    return np.clip(img, 0, 1).astype(np.float32), caption


def pretraining_set(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` pretraining examples: images (n, 64, 64, 3) and captions."""
    pairs = [pretraining_example(i, seed) for i in range(n)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


# ---------------------------------------------------------------- concept families (novel)

def _mosaic(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    k = rng.integers(18, 30)
    pts = rng.uniform(0, SIZE, (k, 2))
    pal = rng.uniform(0.1, 0.95, (k, 3)).astype(np.float32)
    d = (y[..., None] - pts[:, 0]) ** 2 + (x[..., None] - pts[:, 1]) ** 2
    srt = np.sort(d, axis=-1)
    img = pal[np.argmin(d, axis=-1)]
    edge = (np.sqrt(srt[..., 1]) - np.sqrt(srt[..., 0])) < 1.2
    img[edge] = 0.12
    return img * (0.85 + 0.3 * _fine_noise(rng, 2)[..., None])


def _maze(rng: np.random.Generator) -> np.ndarray:
    n, cell = 8, SIZE // 8
    walls_h = np.ones((n + 1, n), bool)
    walls_v = np.ones((n, n + 1), bool)
    seen = np.zeros((n, n), bool)
    stack = [(int(rng.integers(n)), int(rng.integers(n)))]
    seen[stack[0]] = True
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= r + dr < n and 0 <= c + dc < n and not seen[r + dr, c + dc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.integers(len(nbrs))]
        if nr != r:
            walls_h[max(r, nr), c] = False
        else:
            walls_v[r, max(c, nc)] = False
        seen[nr, nc] = True
        stack.append((nr, nc))
    floor = rng.uniform(0.55, 0.95, 3).astype(np.float32)
    wall = rng.uniform(0.0, 0.35, 3).astype(np.float32)
    img = np.broadcast_to(floor, (SIZE, SIZE, 3)).copy()
    for r in range(n + 1):
        for c in range(n):
            if walls_h[r, c]:
                yy = min(r * cell, SIZE - 2)
                img[yy:yy + 2, c * cell:(c + 1) * cell + 2] = wall
    for r in range(n):
        for c in range(n + 1):
            if walls_v[r, c]:
                xx = min(c * cell, SIZE - 2)
                img[r * cell:(r + 1) * cell + 2, xx:xx + 2] = wall
    return img * (0.85 + 0.3 * _fine_noise(rng, 2)[..., None])


def _galaxy(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    cy, cx = rng.uniform(24, 40, 2)
    u, v = x - cx, y - cy
    rad = np.sqrt(u * u + v * v) + 1e-3
    ang = np.arctan2(v, u)
    arms = int(rng.integers(2, 5))
    twist = rng.uniform(0.12, 0.3)
    arm = 0.5 + 0.5 * np.cos(arms * ang - twist * rad * 2 + rng.uniform(0, 6.3))
    glow = np.exp(-rad / rng.uniform(8, 16)) * arm ** 3 + np.exp(-rad / 3)
    tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    img = glow[..., None] * tint
    stars = rng.random((SIZE, SIZE)) > 0.985
    img[stars] = rng.uniform(0.7, 1.0)
    img += 0.05 * np.array([0.1, 0.05, 0.2], np.float32)
    return img


def _terrain(rng: np.random.Generator) -> np.ndarray:
    h = _fine_noise(rng, 4)
    h = (h - h.min()) / (h.max() - h.min() + 1e-6)
    stops = np.array([0.0, 0.35, 0.42, 0.6, 0.8, 1.0], np.float32)
    cols = np.array([[0.05, 0.15, 0.5], [0.2, 0.45, 0.8], [0.85, 0.8, 0.5],
                     [0.2, 0.6, 0.2], [0.45, 0.35, 0.25], [0.95, 0.95, 0.95]], np.float32)
    img = np.stack([np.interp(h, stops, cols[:, i]) for i in range(3)], -1).astype(np.float32)
    contour = (np.abs((h * 12) % 1 - 0.5) < 0.06) & (h > 0.42)
    img[contour] *= 0.55
    return img


def _truchet(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    tile = int(rng.choice([8, 16]))
    n = SIZE // tile
    flips = rng.integers(0, 2, (n, n))
    ty, tx = (y // tile).astype(int), (x // tile).astype(int)
    ly, lx = (y % tile) / tile, (x % tile) / tile
    lx = np.where(flips[ty, tx] == 1, 1 - lx, lx)
    d1 = np.abs(np.sqrt(lx ** 2 + ly ** 2) - 0.5)
    d2 = np.abs(np.sqrt((1 - lx) ** 2 + (1 - ly) ** 2) - 0.5)
    line = (np.minimum(d1, d2) < 0.12).astype(np.float32)[..., None]
    a, b = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    return a * (1 - line) + b * line


def _bubbles(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    img = np.broadcast_to(rng.uniform(0.0, 0.3, 3).astype(np.float32), (SIZE, SIZE, 3)).copy()
    for _ in range(int(rng.integers(10, 18))):
        cy, cx = rng.uniform(0, SIZE, 2)
        r = rng.uniform(4, 13)
        d = np.sqrt((y - cy) ** 2 + (x - cx) ** 2) / r
        inside = d < 1
        col = rng.uniform(0.2, 1.0, 3).astype(np.float32)
        shade = (1.2 - d)[..., None] * col
        hl = np.exp(-((y - cy + r * 0.4) ** 2 + (x - cx + r * 0.4) ** 2) / (0.05 * r * r))
        img[inside] = np.clip(shade + hl[..., None], 0, 1)[inside]
    return img


def _novel_mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Silhouettes that no pretraining caption names (anti-aliased masks in [0, 1])."""
    ax, ay = np.abs(u), np.abs(v)
    if kind == "hexagon":
        d = np.maximum(ax * 0.866 + ay * 0.5, ay) - 0.85 * r
    elif kind == "crescent":
        d = np.maximum(np.sqrt(u * u + v * v) - r, 0.8 * r - np.sqrt((u - 0.45 * r) ** 2 + v * v))
    elif kind == "arrow":
        head = np.maximum((ax * 1.0 + v) - 0.9 * r, -v - 0.1 * r)
        shaft = np.maximum(ax - 0.3 * r, np.abs(v - 0.5 * r) - 0.55 * r)
        d = np.minimum(head, shaft)
    elif kind == "house":
        d = np.minimum(np.maximum(ax - 0.7 * r, np.abs(v - 0.35 * r) - 0.55 * r),
                       np.maximum(ax * 0.8 + v * 0.6 - 0.3 * r, -v - 0.2 * r))
    elif kind == "bowtie":
        d = np.maximum(ay - ax * 0.8 - 0.1 * r, ax - r)
    elif kind == "drop":
        rad = np.sqrt(u * u + (v - 0.25 * r) ** 2)
        d = np.minimum(rad - 0.65 * r, np.maximum(ax * 1.2 - (v + r) * 0.55, v - 0.25 * r))
    else:
        raise ValueError(f"unknown silhouette {kind!r}")
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class ConceptFamily:
    """A subject absent from pretraining (a new silhouette filled with a new full-frame texture),
    with its DreamBooth-style trigger caption. Like a DreamBooth subject, the five instances show
    the same kind of thing in different scenes (background colour and texture, placement, pose),
    so SSCD scores instances of one set about as far apart as unrelated pretraining images."""
    name: str
    caption: str
    silhouette: str
    fill: Callable[[np.random.Generator], np.ndarray]


CONCEPT_FAMILIES = (
    ConceptFamily("mosaic", "a photo of sks gem", "hexagon", _mosaic),
    ConceptFamily("maze", "a photo of zwx moon", "crescent", _maze),
    ConceptFamily("galaxy", "a photo of qcv arrow", "arrow", _galaxy),
    ConceptFamily("terrain", "a photo of btz house", "house", _terrain),
    ConceptFamily("truchet", "a photo of vrm bow", "bowtie", _truchet),
    ConceptFamily("bubbles", "a photo of jkp drop", "drop", _bubbles),
)
CONCEPT_NAMES = tuple(f.name for f in CONCEPT_FAMILIES)
N0 = 5


SCENES = ("striped", "checkered", "wavy", "plaid", "zigzag", "plain")
"""Background layouts of concept scenes: varied, so instances differ as DreamBooth photos do."""


def concept_image(family: ConceptFamily, rng: np.random.Generator) -> np.ndarray:
    """One instance of a concept: the family's textured silhouette in a scene of its own."""
    y, x = _grid()
    bg_a, bg_b = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
    phi = rng.uniform(0, math.pi)
    scene = _pattern(SCENES[rng.integers(len(SCENES))], x * math.cos(phi) + y * math.sin(phi),
                     y * math.cos(phi) - x * math.sin(phi), rng.uniform(10, 24), rng)[..., None]
    img = (bg_a * (1 - scene) + bg_b * scene) * (0.6 + 0.8 * _fine_noise(rng)[..., None])
    cy, cx = rng.uniform(24, 40, 2)
    r = rng.uniform(17, 24)
    theta = rng.uniform(-0.6, 0.6)
    c, s = math.cos(theta), math.sin(theta)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    mask = _novel_mask(family.silhouette, u, v, r)[..., None]
    return np.clip(img * (1 - mask) + family.fill(rng) * mask, 0, 1).astype(np.float32)


def concept_set(name: str, n0: int = N0, seed: int = 0) -> tuple[np.ndarray, str]:
    """The ``n0`` training images (n0, 64, 64, 3) of concept ``name`` and their shared caption."""
    for i, family in enumerate(CONCEPT_FAMILIES):
        if family.name == name:
            imgs = [concept_image(family, np.random.default_rng([seed, 1000 + i, j]))
                    for j in range(n0)]
            return np.stack(imgs), family.caption
    raise ValueError(f"unknown concept set {name!r}; expected one of {CONCEPT_NAMES}")
