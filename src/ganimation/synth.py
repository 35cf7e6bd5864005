"""A procedural face world with ground-truth Action Units.

GANimation needs faces annotated with AU intensities. Real data sets need a download and an
OpenFace run; this module instead *draws* frontal, cartoon-realistic faces from a set of
identity parameters and the 17 AU intensities, so that

* a model can be trained with nothing but this package (``write_synthetic_dataset``), and
* an expression edit can be scored against the *true* image of the same identity at the target
  AUs (re-render the identity with :func:`render_face`).

Design rules that the tests check:

* deterministic: the same identity, AUs and size give the same pixels;
* anti-aliased: shapes are drawn at 2-4x with Pillow and reduced with a Lanczos filter;
* every AU acts visibly, locally and continuously, after FACS, inside the region returned by
  :func:`au_region_masks`; hair, background, ears and glasses never depend on the AUs, and only
  AU26 moves the jaw outline (all inside :func:`face_region_mask`).

Coordinates: every shape is laid out in a *canonical* frame whose unit is the image side, with
the face centre at the origin, x to the image right and y downwards. A per-identity similarity
transform (roll, scale, shift) maps it onto the image.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from .aus import AU_NAMES, NUM_AUS, OPENFACE_COLUMNS, OPENFACE_SCALE, check_au_vector
from .files import save_image, write_text_atomic

logger = logging.getLogger(__name__)

MIN_SIZE = 32
MAX_SIZE = 512

HAIR_STYLES: tuple[str, ...] = ("short", "long", "bald", "fringe", "bun", "curly")
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise")
GLASSES_KINDS: tuple[str, ...] = ("none", "round", "square")

Color = tuple[int, int, int]

#: Skin tones from very fair to very dark; identities interpolate along this ramp.
_SKIN_RAMP: tuple[Color, ...] = (
    (255, 226, 208), (243, 199, 166), (226, 174, 134), (200, 143, 104),
    (166, 110, 74), (128, 82, 54), (92, 58, 40), (62, 42, 32),
)
_HAIR_COLORS: tuple[Color, ...] = (
    (24, 20, 18), (24, 20, 18), (58, 40, 28), (58, 40, 28), (100, 68, 44), (146, 106, 68),
    (212, 180, 118), (136, 62, 32), (176, 84, 40), (150, 150, 150), (214, 212, 206),
    (60, 88, 168), (206, 108, 158),
)
_EYE_COLORS: tuple[Color, ...] = (
    (58, 36, 24), (92, 60, 34), (116, 96, 50), (78, 116, 70), (64, 112, 170), (112, 124, 136),
    (118, 156, 196),
)
_FRAME_COLORS: tuple[Color, ...] = ((20, 20, 22), (60, 40, 30), (170, 140, 70), (110, 30, 40), (40, 60, 110))
_TEETH: Color = (236, 230, 214)
_MOUTH_INSIDE: Color = (78, 26, 32)
_SCLERA: Color = (242, 238, 232)
_BLUSH: Color = (214, 72, 80)
_WHITE: Color = (255, 255, 255)

#: Fixed "orange peel" pattern of the chin boss (AU17): offsets in units of the mouth width.
_CHIN_DIMPLES: tuple[tuple[float, float], ...] = (
    (-0.45, 0.00), (-0.15, -0.10), (0.20, -0.05), (0.50, 0.05), (-0.30, 0.30), (0.05, 0.25), (0.35, 0.35),
)

_N = 25  # samples per curve


# --------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person (and their photo) look the way they do.

    Lengths are in canonical units (fraction of the image side before the pose scale). The AUs
    are *not* part of an identity: one identity is rendered at many expressions.
    """

    face_width: float  # half width of the face oval
    face_height: float  # half height of the face oval
    jaw_squareness: float  # superellipse exponent of the lower face: 2 oval .. 2.8 square
    chin_taper: float  # how much the jaw narrows towards the chin
    skin: Color
    eye_spacing: float  # x of each eye centre from the midline
    eye_y: float
    eye_width: float  # half width of the eye opening
    eye_openness: float  # upper lid height / eye_width
    eye_tilt: float  # outer corner raise / eye_width
    eye_color: Color
    brow_gap: float  # eye centre to brow centre line
    brow_thickness: float
    brow_arch: float
    brow_peak: float  # where along the brow (0 inner .. 1 outer) the arch peaks
    brow_color: Color
    nose_width: float  # half width of the nostril wings
    nose_length: float  # eye line to nose tip
    mouth_drop: float  # nose tip to mouth line
    mouth_width: float  # half width of the mouth
    lip_upper: float
    lip_lower: float
    lip_color: Color
    hair_style: str
    hair_color: Color
    hairline: float  # face top to hairline
    background: str
    background_colors: tuple[Color, Color]
    background_angle: float  # radians, direction of the gradient
    texture_seed: int
    clothing_color: Color
    light_angle: float  # radians, direction the light comes from (canonical frame)
    light_strength: float
    roll: float  # degrees
    scale: float
    shift_x: float  # fraction of the image side
    shift_y: float
    glasses: str
    glasses_color: Color

    def __post_init__(self) -> None:
        if self.hair_style not in HAIR_STYLES:
            raise ValueError(f"unknown hair style {self.hair_style!r}: choose from {', '.join(HAIR_STYLES)}")
        if self.background not in BACKGROUND_KINDS:
            raise ValueError(f"unknown background {self.background!r}: choose from {', '.join(BACKGROUND_KINDS)}")
        if self.glasses not in GLASSES_KINDS:
            raise ValueError(f"unknown glasses {self.glasses!r}: choose from {', '.join(GLASSES_KINDS)}")

    @property
    def nose_y(self) -> float:
        """y of the nose tip."""
        return self.eye_y + self.nose_length

    @property
    def mouth_y(self) -> float:
        """y of the neutral mouth line."""
        return self.nose_y + self.mouth_drop

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters; :meth:`from_dict` gives back an equal identity."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        """Inverse of :meth:`to_dict`; rejects missing or unknown keys so stale files fail loudly."""
        names = {field.name for field in dataclasses.fields(cls)}
        missing, unknown = names - set(data), set(data) - names
        if missing or unknown:
            raise ValueError(f"identity parameters: missing {sorted(missing)}, unknown {sorted(unknown)}")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = data[field.name]
            if field.name == "background_colors":
                value = tuple(_as_color(c) for c in value)
            elif field.name.endswith(("_color", "skin")):
                value = _as_color(value)
            elif field.name == "texture_seed":
                value = int(value)
            elif field.type in ("float", float):
                value = float(value)
            values[field.name] = value
        return cls(**values)


def _as_color(value: Sequence[Any]) -> Color:
    r, g, b = (int(v) for v in value)
    return (r, g, b)


def _jitter_color(rng: np.random.Generator, color: Color, amount: float) -> Color:
    values = np.clip(np.asarray(color, dtype=float) + rng.normal(0.0, amount, 3), 0, 255)
    return _as_color(np.round(values))


def _sample_skin(rng: np.random.Generator) -> Color:
    position = rng.uniform(0.0, len(_SKIN_RAMP) - 1)
    low = int(position)
    high = min(low + 1, len(_SKIN_RAMP) - 1)
    return _jitter_color(rng, _mix(_SKIN_RAMP[low], _SKIN_RAMP[high], position - low), 5.0)


def _lip_color(skin: Color) -> Color:
    """Redder and darker than the skin; pinker on dark skin, where darkening alone shows little."""
    darkness = 1.0 - sum(skin) / (3 * 255)
    tint = np.asarray(skin, dtype=float) * (0.92, 0.62, 0.68) + darkness**2 * np.array([90.0, 35.0, 50.0])
    return _as_color(np.clip(np.round(tint), 0, 255))


def _luminance(color: Sequence[float]) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def _contrasting(color: Color, reference: Color, contrast: float = 40.0) -> Color:
    """``color``, darkened if its luminance is within ``contrast`` of the reference's (brows
    that vanish into the skin would hide the brow AUs)."""
    current, target = _luminance(color), _luminance(reference)
    if abs(current - target) >= contrast:
        return color
    wanted = target - contrast if target - contrast >= 15 else 0.3 * target
    return _scale_color(color, wanted / max(current, 1e-6))


def _pick(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    p = None if weights is None else np.asarray(weights, dtype=float) / float(np.sum(weights))
    return options[int(rng.choice(len(options), p=p))]


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random person: head shape, features, colours, hair, scene, lighting and pose.

    The ranges are wide enough that a model cannot memorise identities, yet narrow enough that
    the features never collide (brows stay below the hairline, glasses inside the face).
    """
    skin = _sample_skin(rng)
    hair_color = _pick(rng, _HAIR_COLORS)
    hair_style = _pick(rng, HAIR_STYLES, (3, 3, 1, 2, 1.5, 1.5))
    brow_color = _contrasting(_mix(hair_color, (30, 22, 18), 0.35 if hair_style != "bald" else 0.6), skin)
    low_bg = rng.integers(30, 200, 3)
    bg_a = _as_color(low_bg)
    bg_b = _as_color(np.clip(low_bg + rng.integers(-70, 71, 3), 0, 255))
    return Identity(
        face_width=float(rng.uniform(0.245, 0.29)),
        face_height=float(rng.uniform(0.33, 0.365)),
        jaw_squareness=float(rng.uniform(2.0, 2.8)),
        chin_taper=float(rng.uniform(0.05, 0.3)),
        skin=skin,
        eye_spacing=float(rng.uniform(0.098, 0.12)),
        eye_y=float(rng.uniform(-0.05, -0.025)),
        eye_width=float(rng.uniform(0.047, 0.058)),
        eye_openness=float(rng.uniform(0.36, 0.48)),
        eye_tilt=float(rng.uniform(-0.05, 0.15)),
        eye_color=_jitter_color(rng, _pick(rng, _EYE_COLORS), 6.0),
        brow_gap=float(rng.uniform(0.058, 0.074)),
        brow_thickness=float(rng.uniform(0.009, 0.017)),
        brow_arch=float(rng.uniform(0.002, 0.016)),
        brow_peak=float(rng.uniform(0.5, 0.75)),
        brow_color=_jitter_color(rng, brow_color, 6.0),
        nose_width=float(rng.uniform(0.033, 0.05)),
        nose_length=float(rng.uniform(0.11, 0.14)),
        mouth_drop=float(rng.uniform(0.068, 0.082)),
        mouth_width=float(rng.uniform(0.07, 0.09)),
        lip_upper=float(rng.uniform(0.012, 0.019)),
        lip_lower=float(rng.uniform(0.016, 0.025)),
        lip_color=_jitter_color(rng, _lip_color(skin), 6.0),
        hair_style=hair_style,
        hair_color=_jitter_color(rng, hair_color, 8.0),
        hairline=float(rng.uniform(0.08, 0.125)),
        background=_pick(rng, BACKGROUND_KINDS),
        background_colors=(bg_a, bg_b),
        background_angle=float(rng.uniform(0.0, 2 * math.pi)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        clothing_color=_as_color(rng.integers(20, 235, 3)),
        light_angle=float(rng.uniform(0.0, 2 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.16)),
        roll=float(rng.uniform(-8.0, 8.0)),
        scale=float(rng.uniform(0.92, 1.08)),
        shift_x=float(rng.uniform(-0.04, 0.04)),
        shift_y=float(rng.uniform(-0.04, 0.04)),
        glasses=_pick(rng, GLASSES_KINDS, (3, 0.5, 0.5)),
        glasses_color=_pick(rng, _FRAME_COLORS),
    )


# --------------------------------------------------------------------------------------------
# AU sampling
# --------------------------------------------------------------------------------------------

#: The world's emotion prototypes (EMFACS, at the moderate strengths OpenFace reports on real
#: faces). They are the world's own: ``aus.EXPRESSIONS``, what users ask for, may change without
#: changing a seed's images, labels or the benchmark.
LABEL_PROTOTYPES: dict[str, dict[str, float]] = {
    "happy": {"AU06": 0.8, "AU12": 1.0, "AU25": 0.3},
    "sad": {"AU01": 0.9, "AU04": 0.6, "AU15": 0.9, "AU17": 0.3},
    "surprise": {"AU01": 1.0, "AU02": 1.0, "AU05": 0.8, "AU25": 0.6, "AU26": 0.9},
    "fear": {"AU01": 0.9, "AU02": 0.7, "AU04": 0.6, "AU05": 0.9, "AU07": 0.5, "AU20": 0.8, "AU25": 0.5, "AU26": 0.5},
    "anger": {"AU04": 1.0, "AU05": 0.6, "AU07": 0.8, "AU23": 0.9, "AU17": 0.4},
    "disgust": {"AU09": 1.0, "AU10": 0.8, "AU15": 0.5, "AU17": 0.4},
    "contempt": {"AU12": 0.4, "AU14": 0.6},
}
_EMOTIONS: tuple[str, ...] = tuple(LABEL_PROTOTYPES)
_AU_POS: dict[str, int] = {name: i for i, name in enumerate(AU_NAMES)}


def sample_aus(rng: np.random.Generator) -> np.ndarray:
    """A plausible AU vector in [0, 1]: sparse, mostly EMFACS emotions, some neutral faces.

    Mixture: ~12% neutral, ~63% a basic emotion prototype at a random intensity (with per-AU
    jitter, dropped AUs and sometimes a second, weaker emotion), ~25% a few random AUs; on top,
    occasional extra AUs and blinks so that every AU is also seen outside its prototypes.
    """
    aus = np.zeros(NUM_AUS, dtype=np.float64)
    draw = rng.random()
    if draw < 0.12:
        return aus.astype(np.float32)
    if draw < 0.75:
        _add_emotion(rng, aus, _pick(rng, _EMOTIONS), rng.uniform(0.25, 1.0))
        if rng.random() < 0.15:
            _add_emotion(rng, aus, _pick(rng, _EMOTIONS), rng.uniform(0.15, 0.5))
    else:
        chosen = rng.choice(NUM_AUS, size=int(rng.integers(1, 5)), replace=False)
        aus[chosen] = rng.uniform(0.15, 1.0, size=chosen.size)
    if rng.random() < 0.3:
        extra = int(rng.integers(NUM_AUS))
        aus[extra] = max(aus[extra], rng.uniform(0.1, 0.6))
    active = aus > 0
    aus[active] += rng.normal(0.0, 0.04, size=int(active.sum()))
    if rng.random() < 0.06:
        aus[_AU_POS["AU45"]] = rng.uniform(0.5, 1.0)
    return _sparse_aus(aus)


def vary_aus(rng: np.random.Generator, aus: np.ndarray) -> np.ndarray:
    """A nearby expression, as a later frame of the same video shows: a small change of ``aus``.

    One time in three the whole expression grows or fades (all intensities times 0.3..1.4);
    otherwise one or two AUs change: an active one may switch off, any may take a new intensity
    (0.15..1). Pairs of such faces teach a model the small, local edits (one AU a little more or
    less) that independent samples from :func:`sample_aus` seldom pair up.
    """
    varied = np.asarray(aus, dtype=np.float64).copy()
    if varied.any() and rng.random() < 1.0 / 3.0:
        varied *= rng.uniform(0.3, 1.4)
    else:
        for index in rng.choice(NUM_AUS, size=int(rng.integers(1, 3)), replace=False):
            switch_off = varied[index] > 0 and rng.random() < 0.5
            varied[index] = 0.0 if switch_off else rng.uniform(0.15, 1.0)
    return _sparse_aus(varied)


def single_au(rng: np.random.Generator) -> np.ndarray:
    """One AU alone at an intensity uniform in [0.15, 1], as FACS training material poses them.

    In :func:`sample_aus` most AUs come with their emotion's partners, and any one of them shows
    alone in about 0.25% of faces (AU17 above 0.5 in 0.14%), so a model trained on it learns each
    AU as part of its co-occurrences and under-draws it when asked for it alone, as the AU sliders
    of ``ganimation web`` and the single-AU edits of ``ganimation evaluate`` do.
    """
    aus = np.zeros(NUM_AUS, dtype=np.float64)
    aus[int(rng.integers(NUM_AUS))] = rng.uniform(0.15, 1.0)
    return _sparse_aus(aus)


def _sparse_aus(aus: np.ndarray) -> np.ndarray:
    """Clipped to [0, 1], with intensities under 0.05 (below what OpenFace reports) set to 0."""
    aus = np.clip(aus, 0.0, 1.0)
    aus[aus < 0.05] = 0.0
    return aus.astype(np.float32)


def _add_emotion(rng: np.random.Generator, aus: np.ndarray, name: str, intensity: float) -> None:
    for au, value in LABEL_PROTOTYPES[name].items():
        if rng.random() < 0.12:
            continue
        index = _AU_POS[au]
        aus[index] = max(aus[index], value * intensity * rng.uniform(0.75, 1.2))


# --------------------------------------------------------------------------------------------
# Small geometry and colour helpers
# --------------------------------------------------------------------------------------------

def _mix(a: Sequence[float], b: Sequence[float], t: float) -> Color:
    t = float(t)
    return _as_color(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _scale_color(color: Sequence[float], factor: float) -> Color:
    return _as_color(round(min(255.0, max(0.0, v * factor))) for v in color)


def _highlight(skin: Color, amount: float = 0.2) -> Color:
    """Colour of a lit bulge: towards white, so that it shows on dark skin as well."""
    return _mix(skin, _WHITE, amount)


def _crease(skin: Color) -> Color:
    """Colour of wrinkles and folds: a deep shade of the skin."""
    return _scale_color(skin, 0.42)


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _pts(x: np.ndarray | Iterable[float], y: np.ndarray | Iterable[float]) -> np.ndarray:
    return np.stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)], axis=-1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, angle: float = 0.0) -> np.ndarray:
    theta = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(theta), ry * np.sin(theta)
    c, s = math.cos(angle), math.sin(angle)
    return _pts(cx + c * x - s * y, cy + s * x + c * y)


def _superellipse(cx: float, cy: float, rx: float, ry: float, power: float, n: int = 48) -> np.ndarray:
    theta = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    e = 2.0 / power
    return _pts(cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e)


def _bezier(p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, dtype=float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0])


# --------------------------------------------------------------------------------------------
# Canvas: canonical shapes -> supersampled pixels
# --------------------------------------------------------------------------------------------

def _supersampling(size: int) -> int:
    """Drawing scale: enough for smooth edges at small sizes, bounded cost at large ones."""
    return 4 if size <= 96 else 3 if size <= 256 else 2


class _Canvas:
    """A Pillow image with the identity's pose transform and a few blending primitives."""

    def __init__(self, image: Image.Image, identity: Identity):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        side = image.size[0]
        self.angle = math.radians(identity.roll)
        self.unit = identity.scale * side  # pixels per canonical unit
        c, s = math.cos(self.angle), math.sin(self.angle)
        self.matrix = self.unit * np.array([[c, -s], [s, c]])
        self.offset = np.array([(0.5 + identity.shift_x) * side, (0.5 + identity.shift_y) * side])

    def px(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=float).reshape(-1, 2) @ self.matrix.T + self.offset

    def _xy(self, points: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in self.px(points).tolist()]

    def width(self, width: float) -> int:
        return max(1, int(round(width * self.unit)))

    def polygon(self, points: np.ndarray, color: Color | int) -> None:
        self.draw.polygon(self._xy(points), fill=color)

    def line(self, points: np.ndarray, color: Color, width: float, closed: bool = False) -> None:
        xy = self._xy(points)
        if closed:
            xy.append(xy[0])
        self.draw.line(xy, fill=color, width=self.width(width), joint="curve")

    def overlay(self, strokes: Sequence[tuple[np.ndarray, float]], color: Color, alpha: float) -> None:
        """Blend ``color`` at opacity ``alpha`` through lines (width > 0) or polygons (width 0).

        Blending (not colour mixing) keeps wrinkles continuous in intensity whatever lies
        below them; the work is confined to the strokes' bounding box.
        """
        level = int(round(255 * min(1.0, float(alpha))))
        if level <= 0 or not strokes:
            return
        pixel_strokes = [(self.px(points), width) for points, width in strokes]
        pad = max(self.width(width) for _, width in strokes) + 2
        allp = np.concatenate([p for p, _ in pixel_strokes])
        box = self._box(allp.min(axis=0) - pad, allp.max(axis=0) + pad)
        if box is None:
            return
        x0, y0, x1, y1 = box
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(mask)
        for points, width in pixel_strokes:
            xy = [tuple(p) for p in (points - (x0, y0)).tolist()]
            if width > 0:
                draw.line(xy, fill=level, width=self.width(width), joint="curve")
            elif len(xy) >= 3:
                draw.polygon(xy, fill=level)
        self.image.paste(color, box, mask)

    def blob(self, center: Sequence[float], radii: Sequence[float], color: Color, alpha: float,
             angle: float = 0.0) -> None:
        """Soft elliptic spot with compact support (alpha falls as (1 - r^2)^2)."""
        if alpha <= 0:
            return
        cx, cy = self.px(np.asarray(center))[0]
        rx, ry = radii[0] * self.unit, radii[1] * self.unit
        reach = max(rx, ry) + 1
        box = self._box(np.array([cx - reach, cy - reach]), np.array([cx + reach, cy + reach]))
        if box is None:
            return
        x0, y0, x1, y1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        c, s = math.cos(self.angle + angle), math.sin(self.angle + angle)
        dx, dy = xx - cx, yy - cy
        r2 = ((dx * c + dy * s) / rx) ** 2 + ((-dx * s + dy * c) / ry) ** 2
        weight = np.clip(1.0 - r2, 0.0, 1.0) ** 2 * (255.0 * min(1.0, alpha))
        self.image.paste(color, box, Image.fromarray(np.round(weight).astype(np.uint8), "L"))

    def _box(self, low: np.ndarray, high: np.ndarray) -> tuple[int, int, int, int] | None:
        w, h = self.image.size
        x0, y0 = max(0, int(math.floor(low[0]))), max(0, int(math.floor(low[1])))
        x1, y1 = min(w, int(math.ceil(high[0]))), min(h, int(math.ceil(high[1])))
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


# --------------------------------------------------------------------------------------------
# Face geometry (canonical frame)
# --------------------------------------------------------------------------------------------

#: Chin drop at AU26 = 1 (canonical units).
_JAW_DROP = 0.07


def _jaw_weight(identity: Identity, y: np.ndarray | float) -> np.ndarray:
    """How much of the jaw drop a point at height ``y`` follows: 0 above the nose tip, 1 at the chin."""
    start = identity.nose_y
    return _smoothstep((np.asarray(y, dtype=float) - start) / (identity.face_height - start))


def _face_outline(identity: Identity, jaw_drop: float = 0.0) -> np.ndarray:
    """Face oval: elliptic forehead, superellipse jaw narrowing to the chin, lowered by AU26."""
    theta = np.linspace(0.0, 2 * math.pi, 120, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    fw, fh = identity.face_width, identity.face_height
    x, y = fw * c, fh * s
    lower = s > 0
    e = 2.0 / identity.jaw_squareness
    y[lower] = fh * np.abs(s[lower]) ** e
    x[lower] = fw * np.sign(c[lower]) * np.abs(c[lower]) ** e * (1 - identity.chin_taper * (y[lower] / fh) ** 2)
    y = y + jaw_drop * _jaw_weight(identity, y)
    return _pts(x, y)


def _neck(identity: Identity) -> np.ndarray:
    half = identity.face_width * 0.52
    return _pts([-half, half, half * 1.12, -half * 1.12], [0.0, 0.0, 0.75, 0.75])


def _ears(identity: Identity) -> list[np.ndarray]:
    right = _ellipse(identity.face_width - 0.006, identity.eye_y + 0.04, 0.034, 0.062, n=32)
    return [right, _mirror(right)]


def _skull(identity: Identity, grow: float = 0.0, bumps: float = 0.0, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Outline of the hair mass around the head (angles and points)."""
    theta = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    radius = 1.0 + bumps * np.sin(13 * theta)
    x = (identity.face_width + 0.03 + grow) * np.cos(theta) * radius
    y = -0.03 + (identity.face_height + 0.06 + grow) * np.sin(theta) * radius
    return theta, _pts(x, y)


def _hairline_y(identity: Identity, x: np.ndarray) -> np.ndarray:
    top = -identity.face_height + identity.hairline
    temple = identity.eye_y - 0.01
    return top + (temple - top) * np.clip(np.abs(x) / identity.face_width, 0, 1) ** 4


def _hair_shapes(identity: Identity) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(polygons behind the head, polygons over the forehead) for the identity's hair style."""
    style = identity.hair_style
    if style == "bald":
        return [], []
    fw, fh, ey = identity.face_width, identity.face_height, identity.eye_y
    back: list[np.ndarray] = []
    bumps = 0.045 if style == "curly" else 0.0
    grow = 0.05 if style == "curly" else (-0.008 if style == "bun" else 0.0)
    _, skull = _skull(identity, grow, bumps)
    if style == "long":
        top = skull[skull[:, 1] <= 0.0]
        top = top[np.argsort(np.arctan2(top[:, 1], top[:, 0]))]
        sides = _pts([fw + 0.06, fw + 0.09, -(fw + 0.09), -(fw + 0.06)], [0.15, 0.7, 0.7, 0.15])
        back.append(np.concatenate([top, sides]))
    else:
        limit = ey + (0.12 if style == "curly" else 0.03)
        back.append(skull[skull[:, 1] <= limit])
    if style == "bun":
        back.append(_ellipse(0.0, -fh - 0.075, 0.07, 0.06, n=36))
    # The cap over the forehead: the skull's upper arc closed by the hairline.
    x = np.linspace(fw * 1.02, -fw * 1.02, 41)
    cap_edge = _pts(x, _cap_edge_y(identity, x))
    arc = skull[skull[:, 1] <= ey - 0.005]
    arc = arc[np.argsort(np.arctan2(arc[:, 1], arc[:, 0]))]  # left -> over the top -> right
    front = [np.concatenate([arc, cap_edge])]
    if style == "fringe":
        front.append(_fringe(identity))
    return back, front


def _cap_edge_y(identity: Identity, x: np.ndarray) -> np.ndarray:
    """Lower edge of the hair cap over the forehead (a centre parting for long hair)."""
    fw, fh = identity.face_width, identity.face_height
    if identity.hair_style == "long":
        reach = np.clip(np.abs(x - 0.025) / (fw + 0.02), 0, 1)
        return -fh + 0.015 + (identity.eye_y + 0.005 + fh) * reach**2
    edge = _hairline_y(identity, x) - (0.012 if identity.hair_style == "bun" else 0.0)
    if identity.hair_style == "curly":
        edge = edge + 0.008 * np.sin(x / fw * 18)
    return edge


def _fringe(identity: Identity) -> np.ndarray:
    """Bangs whose ragged edge stays above the highest brow position (AU1+AU2 at 1)."""
    fw = identity.face_width
    highest_brow = identity.eye_y - identity.brow_gap - identity.brow_arch - 0.032 - identity.brow_thickness
    bottom = min(-0.2, highest_brow - 0.012)
    x = np.linspace(-fw * 0.92, fw * 0.92, 43)
    strands = 0.012 * np.abs(np.sin(x / fw * 3.5 * math.pi))
    edge = bottom - strands + 0.035 * (np.abs(x) / fw) ** 4
    top = _pts(x[::-1], _hairline_y(identity, x[::-1]) - 0.02)
    return np.concatenate([_pts(x, edge), top])


def _hair_strands(identity: Identity) -> list[np.ndarray]:
    """A few curved strands on the cap for texture (identity-only, never AU-dependent)."""
    if identity.hair_style == "bald":
        return []
    fw, fh = identity.face_width, identity.face_height
    strands = []
    for k, x_end in enumerate(np.linspace(-0.8, 0.8, 6)):
        start = (0.02 * (k - 2.5), -fh - 0.04)
        end = (x_end * fw, float(_cap_edge_y(identity, np.array([x_end * fw]))[0]) - 0.015)
        mid = ((start[0] + end[0]) / 2 + 0.02 * np.sign(x_end), (start[1] + end[1]) / 2 - 0.01)
        strands.append(_bezier(start, mid, end, 10))
    return strands


# ---- eyes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Eye:
    x: np.ndarray
    upper: np.ndarray  # upper lid edge y
    lower: np.ndarray  # lower lid edge y
    crease: np.ndarray  # upper lid crease y
    center: tuple[float, float]
    width: float


def _eye(identity: Identity, side: int, au: dict[str, float]) -> _Eye:
    """Lids of one eye: AU5 lifts, AU6/AU7 raise (AU7 straightens) the lower lid, AU45 closes."""
    ew, ey = identity.eye_width, identity.eye_y
    ex = side * identity.eye_spacing
    t = np.linspace(-1.0, 1.0, _N)
    outward = t * side
    base = ey - identity.eye_tilt * ew * outward
    upper_shape = (1 - t**2) ** 0.8 * (1 - 0.1 * outward)
    hu0 = identity.eye_openness * ew
    hu = hu0 * (1 + 1.0 * au["AU05"] - 0.22 * au["AU07"] - 0.12 * au["AU06"])
    hl = 0.32 * ew * max(0.08, 1 - 0.45 * au["AU06"] - 0.62 * au["AU07"])
    lower_shape = (1 - t**2) ** (0.9 - 0.6 * au["AU07"])
    upper_open = base - hu * upper_shape
    lower = base + hl * lower_shape
    upper = upper_open + (lower - upper_open) * au["AU45"]
    crease = base - (hu0 + 0.32 * ew) * (1 - t**2) ** 0.7
    crease = np.minimum(crease, upper - 0.05 * ew * (1 - t**2))
    return _Eye(ex + t * ew, upper, lower, crease, (ex, ey), ew)


def _draw_eye(canvas: _Canvas, identity: Identity, eye: _Eye, side: int) -> None:
    ex, ey = eye.center
    ew = eye.width
    skin = identity.skin
    dark = _scale_color(skin, 0.45)
    if float(np.max(eye.lower - eye.upper)) > 1e-5:
        canvas.polygon(np.concatenate([_pts(eye.x, eye.upper), _pts(eye.x, eye.lower)[::-1]]), _SCLERA)
        radius = 0.47 * ew
        iris_y = ey + 0.04 * ew
        canvas.polygon(_ellipse(ex, iris_y, radius, radius, 32), _scale_color(identity.eye_color, 0.7))
        canvas.polygon(_ellipse(ex, iris_y, radius * 0.84, radius * 0.84, 32), identity.eye_color)
        canvas.polygon(_ellipse(ex, iris_y, radius * 0.42, radius * 0.42, 24), (16, 12, 12))
        canvas.polygon(_ellipse(ex - 0.3 * radius, iris_y - 0.32 * radius, 0.17 * radius, 0.17 * radius, 16), _WHITE)
        # Hide the iris where the lids cover it.
        top, bottom = ey - 1.15 * ew, ey + 1.0 * ew
        canvas.polygon(np.concatenate([_pts(eye.x, eye.upper), _pts([ex + ew, ex - ew], [top, top])]), skin)
        canvas.polygon(np.concatenate([_pts(eye.x, eye.lower), _pts([ex + ew, ex - ew], [bottom, bottom])]), skin)
    lid = _mix(_scale_color(skin, 0.94), (150, 90, 100), 0.06)
    canvas.polygon(np.concatenate([_pts(eye.x, eye.crease), _pts(eye.x, eye.upper)[::-1]]), lid)
    canvas.overlay([(_pts(eye.x, eye.crease), 0.035 * ew)], dark, 0.35)
    canvas.overlay([(_pts(eye.x, eye.lower), 0.05 * ew)], dark, 0.45)
    lash = _mix(identity.brow_color, (10, 8, 8), 0.6)
    canvas.line(_pts(eye.x, eye.upper), lash, 0.1 * ew)
    outer = eye.x[-1] if side > 0 else eye.x[0]
    corner_y = eye.upper[-1] if side > 0 else eye.upper[0]
    canvas.line(_pts([outer - side * 0.1 * ew, outer + side * 0.22 * ew], [corner_y, corner_y - 0.12 * ew]), lash, 0.07 * ew)


def _draw_eye_wrinkles(canvas: _Canvas, identity: Identity, eye: _Eye, side: int, au: dict[str, float]) -> None:
    """AU6: crow's feet and the cheek bulge line under the eye; AU7: tense lower-lid line."""
    ex, ey = eye.center
    ew = eye.width
    dark = _crease(identity.skin)
    if au["AU06"] > 0:
        corner = (ex + side * 1.1 * ew, ey)
        feet = [(_pts([corner[0], ex + side * 1.65 * ew], [corner[1] + dy * ew, corner[1] + dy * 2.2 * ew]), 0.05 * ew)
                for dy in (-0.3, 0.05, 0.4)]
        canvas.overlay(feet, dark, 0.55 * au["AU06"])
        bulge = _bezier((ex - side * 0.7 * ew, ey + 0.75 * ew), (ex + side * 0.2 * ew, ey + 1.25 * ew),
                        (ex + side * 1.05 * ew, ey + 0.7 * ew))
        canvas.overlay([(bulge, 0.05 * ew)], dark, 0.45 * au["AU06"])
    if au["AU07"] > 0:
        tense = _pts(eye.x[4:-4], eye.lower[4:-4] + 0.28 * ew)
        canvas.overlay([(tense, 0.04 * ew)], dark, 0.3 * au["AU07"])


# ---- brows ------------------------------------------------------------------------------------

def _brow(identity: Identity, side: int, au: dict[str, float]) -> np.ndarray:
    """Brow polygon: AU1 lifts the inner end, AU2 the outer end, AU4 lowers and draws them together."""
    ew = identity.eye_width
    inner = max(0.022, identity.eye_spacing - 0.95 * ew - 0.02 * au["AU04"])
    outer = identity.eye_spacing + 1.3 * ew
    t = np.linspace(0.0, 1.0, 14)
    gamma = math.log(0.5) / math.log(identity.brow_peak)
    y = identity.eye_y - identity.brow_gap - identity.brow_arch * (np.sin(math.pi * t**gamma) - 0.25 * t)
    y = y - 0.032 * au["AU01"] * (1 - t) ** 1.6 - 0.032 * au["AU02"] * t**1.2 + 0.026 * au["AU04"] * (1 - 0.45 * t)
    x = inner + (outer - inner) * t
    half = 0.5 * identity.brow_thickness * (1.15 - 0.65 * t)
    tip = _pts([inner - 0.4 * half[0]], [y[0]])
    shape = np.concatenate([tip, _pts(x, y - half), _pts(x[::-1], (y + half)[::-1])])
    return shape * np.array([side, 1.0])


def _draw_brow_wrinkles(canvas: _Canvas, identity: Identity, au: dict[str, float]) -> None:
    """Forehead lines (AU1 central, AU2 lateral) and the vertical glabellar furrows of AU4."""
    dark = _crease(identity.skin)
    brow_y = identity.eye_y - identity.brow_gap
    width = 0.0045
    if au["AU01"] > 0:
        lines = [(_bezier((-0.065, y + 0.006), (0.0, y - 0.008), (0.065, y + 0.006)), width)
                 for y in (brow_y - 0.066, brow_y - 0.088, brow_y - 0.11)]
        canvas.overlay(lines, dark, 0.5 * au["AU01"])
    if au["AU02"] > 0:
        lines = []
        for side in (-1, 1):
            u0, u1 = identity.eye_spacing - 0.01, identity.eye_spacing + 0.065
            for y in (brow_y - 0.072, brow_y - 0.094):
                lines.append((_bezier((side * u0, y), (side * (u0 + u1) / 2, y - 0.008), (side * u1, y + 0.004)), width))
        canvas.overlay(lines, dark, 0.45 * au["AU02"])
    if au["AU04"] > 0:
        lines = [(_pts([side * 0.012, side * 0.009], [brow_y - 0.008, brow_y + 0.03]), 0.004) for side in (-1, 1)]
        canvas.overlay(lines, dark, 0.6 * au["AU04"])


# ---- nose ------------------------------------------------------------------------------------

def _draw_nose(canvas: _Canvas, identity: Identity, au: dict[str, float]) -> None:
    """Static bridge shading; AU9 lifts and flares the wings and nostrils and wrinkles the bridge."""
    nw, ny, ey = identity.nose_width, identity.nose_y, identity.eye_y
    dark = _crease(identity.skin)
    bridge = [(_pts([side * 0.021, side * 0.027], [ey + 0.005, ny - 0.035]), 0.005) for side in (-1, 1)]
    canvas.overlay(bridge, dark, 0.16)
    canvas.blob((0.0, ny - 0.016), (nw * 0.42, 0.02), _highlight(identity.skin), 0.3)
    lift, flare = 0.017 * au["AU09"], 1 + 0.16 * au["AU09"]
    wings = []
    nostril_color = _scale_color(identity.skin, 0.32)
    for side in (-1, 1):
        wing = _bezier((side * nw * 0.45, ny - 0.03 - lift), (side * nw * 1.15 * flare, ny - 0.008 - lift),
                       (side * nw * 0.5, ny + 0.014 - 0.6 * lift))
        wings.append((wing, 0.0045))
        nostril = _ellipse(side * nw * 0.42, ny + 0.007 - 0.8 * lift, nw * 0.22 * flare, nw * 0.1, 20,
                           side * math.radians(14 + 12 * au["AU09"]))
        canvas.polygon(nostril, nostril_color)
    tip_y = ny + 0.009 - 0.5 * lift
    tip_base = _bezier((-nw * 0.32, tip_y), (0.0, tip_y + 0.013), (nw * 0.32, tip_y))
    wings.append((tip_base, 0.004))
    canvas.overlay(wings, dark, 0.5)
    if au["AU09"] > 0:
        lines = [(_bezier((-0.028, y + 0.004), (0.0, y - 0.003), (0.028, y + 0.004)), 0.0045)
                 for y in (ey + 0.012, ey + 0.026, ey + 0.04)]
        lines += [(_pts([side * 0.034, side * 0.05], [ey + 0.004, ey + 0.03]), 0.0045) for side in (-1, 1)]
        canvas.overlay(lines, dark, 0.6 * au["AU09"])


# ---- mouth ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Mouth:
    x: np.ndarray
    t: np.ndarray
    upper_outer: np.ndarray
    upper_inner: np.ndarray
    lower_inner: np.ndarray
    lower_outer: np.ndarray
    half_width: float
    corner_y: float


def _mouth(identity: Identity, au: dict[str, float]) -> _Mouth:
    """Lip contours from the mouth AUs (see docs/synth.md for the table of effects)."""
    t = np.linspace(-1.0, 1.0, 31)
    edge = 1 - t**2
    hw = identity.mouth_width * (1 + 0.13 * au["AU12"] + 0.38 * au["AU20"] - 0.17 * au["AU14"]
                                 - 0.1 * au["AU23"] - 0.05 * au["AU26"])
    corner = -0.03 * au["AU12"] + 0.032 * au["AU15"] + 0.006 * au["AU20"] - 0.006 * au["AU14"]
    line = identity.mouth_y + corner * t**2 - 0.014 * au["AU17"] * edge**0.5
    gap_up = 0.024 * au["AU10"] * edge**0.3 + 0.006 * au["AU25"] * edge**0.8
    gap_low = (0.024 * au["AU25"] + 0.05 * au["AU26"]) * edge**0.8
    thin = 1 - 0.65 * au["AU23"] - 0.35 * au["AU20"] - 0.25 * au["AU12"] - 0.15 * au["AU14"]
    tu = identity.lip_upper * max(0.2, thin)
    tl = identity.lip_lower * max(0.2, thin + 0.3 * au["AU17"] + 0.05 * au["AU12"])
    upper_inner = line - gap_up
    lower_inner = line + gap_low
    bow = (1 - np.abs(t) ** 1.8) ** 0.75 * (1 - 0.22 * np.exp(-((t / 0.13) ** 2)))
    return _Mouth(t * hw, t, upper_inner - tu * bow, upper_inner, lower_inner, lower_inner + tl * edge**0.55,
                  hw, float(line[-1]))


def _draw_mouth(canvas: _Canvas, identity: Identity, mouth: _Mouth) -> None:
    x, t = mouth.x, mouth.t
    gap = mouth.lower_inner - mouth.upper_inner
    if float(gap.max()) > 1e-5:
        canvas.polygon(np.concatenate([_pts(x, mouth.upper_inner), _pts(x, mouth.lower_inner)[::-1]]), _MOUTH_INSIDE)
        inner = np.abs(t) <= 0.86
        teeth_low = np.minimum(mouth.upper_inner + 0.024 * (1 - t**2) ** 0.2, mouth.lower_inner)
        canvas.polygon(np.concatenate([_pts(x[inner], mouth.upper_inner[inner]),
                                       _pts(x[inner], teeth_low[inner])[::-1]]), _TEETH)
        visible = np.abs(t) <= 0.7
        low_top = np.maximum(mouth.lower_inner - 0.009, teeth_low)
        if float((mouth.lower_inner - low_top)[visible].max()) > 1e-5:
            canvas.polygon(np.concatenate([_pts(x[visible], low_top[visible]),
                                           _pts(x[visible], mouth.lower_inner[visible])[::-1]]),
                           _scale_color(_TEETH, 0.93))
    lip = identity.lip_color
    canvas.polygon(np.concatenate([_pts(x, mouth.upper_outer), _pts(x, mouth.upper_inner)[::-1]]), _scale_color(lip, 0.93))
    canvas.polygon(np.concatenate([_pts(x, mouth.lower_inner), _pts(x, mouth.lower_outer)[::-1]]), lip)
    mid = len(t) // 2
    lower_mid = (mouth.lower_inner[mid] + mouth.lower_outer[mid]) / 2
    canvas.blob((0.0, lower_mid), (mouth.half_width * 0.4, identity.lip_lower * 0.25), _WHITE, 0.18)
    outline = [(_pts(x, mouth.upper_outer), 0.003), (_pts(x, mouth.lower_outer), 0.003)]
    canvas.overlay(outline, _scale_color(lip, 0.6), 0.45)
    canvas.line(_pts(x, mouth.upper_inner), _scale_color(lip, 0.42), 0.005)
    hw, cy = mouth.half_width, mouth.corner_y
    corners = [(_pts([side * (hw - 0.004), side * (hw + 0.006)], [cy, cy + 0.001]), 0.004) for side in (-1, 1)]
    canvas.overlay(corners, _scale_color(identity.skin, 0.45), 0.4)


def _draw_mouth_wrinkles(canvas: _Canvas, identity: Identity, mouth: _Mouth, au: dict[str, float]) -> None:
    """Nasolabial folds (AU10, AU12), dimples (AU14), marionette lines (AU15), stretch lines
    (AU20), tightener bulges (AU23) and the chin boss (AU17)."""
    dark = _crease(identity.skin)
    hw, cy = mouth.half_width, mouth.corner_y
    nw, ny, my = identity.nose_width, identity.nose_y, identity.mouth_y
    folds = 0.07 + 0.38 * au["AU12"] + 0.35 * au["AU10"]
    if au["AU12"] > 0:
        for s in (-1, 1):
            canvas.blob((s * (identity.mouth_width + 0.035), my - 0.032), (0.032, 0.022), _highlight(identity.skin),
                        0.35 * au["AU12"])
    lines = [(_bezier((s * (nw + 0.008), ny - 0.012), (s * (nw + 0.05), ny + 0.035),
                      (s * (identity.mouth_width + 0.024), my + 0.016)), 0.0055) for s in (-1, 1)]
    canvas.overlay(lines, dark, folds)
    if au["AU14"] > 0:
        dimples = [(_bezier((s * (hw + 0.012), cy - 0.018), (s * (hw + 0.024), cy), (s * (hw + 0.012), cy + 0.018)), 0.0065)
                   for s in (-1, 1)]
        canvas.overlay(dimples, dark, 0.85 * au["AU14"])
        for s in (-1, 1):
            canvas.blob((s * (hw + 0.004), cy), (0.011, 0.014), dark, 0.5 * au["AU14"])
    if au["AU15"] > 0:
        marionette = [(_pts([s * (hw + 0.002), s * (hw + 0.012)], [cy + 0.006, cy + 0.045]), 0.0065) for s in (-1, 1)]
        canvas.overlay(marionette, dark, 0.65 * au["AU15"])
    if au["AU20"] > 0:
        stretch = [(_pts([s * (hw + 0.004), s * (hw + 0.036)], [cy, cy + 0.007]), 0.006) for s in (-1, 1)]
        canvas.overlay(stretch, dark, 0.65 * au["AU20"])
    mid = len(mouth.t) // 2
    if au["AU23"] > 0:
        ridge = np.abs(mouth.t) <= 0.8
        bulges = [(_pts(mouth.x[ridge], mouth.upper_outer[ridge] - 0.008), 0.0055),
                  (_pts(mouth.x[ridge], mouth.lower_outer[ridge] + 0.007), 0.0055)]
        canvas.overlay(bulges, dark, 0.5 * au["AU23"])
    chin_top = mouth.lower_outer[mid] + 0.018 - 0.006 * au["AU17"]
    sulcus = _bezier((-0.5 * hw, chin_top - 0.004), (0.0, chin_top + 0.006), (0.5 * hw, chin_top - 0.004))
    canvas.overlay([(sulcus, 0.0045)], dark, 0.12 + 0.4 * au["AU17"])
    if au["AU17"] > 0:
        boss_y = float(_jaw_y(identity, identity.face_height - 0.06, au["AU26"]))
        dots = [(_ellipse(dx * hw, boss_y + dy * hw, 0.0035, 0.003, 12), 0.0) for dx, dy in _CHIN_DIMPLES]
        canvas.overlay(dots, dark, 0.4 * au["AU17"])
        canvas.blob((0.0, boss_y), (0.6 * hw, 0.03), _highlight(identity.skin), 0.3 * au["AU17"])


def _jaw_y(identity: Identity, y: float, au26: float) -> float:
    return float(y + _JAW_DROP * au26 * _jaw_weight(identity, y))


def _draw_cheeks(canvas: _Canvas, identity: Identity, au: dict[str, float]) -> None:
    """Static highlights, plus AU6's raised cheek highlight and blush."""
    light = _highlight(identity.skin)
    canvas.blob((0.0, -identity.face_height * 0.55), (0.11, 0.05), light, 0.22)
    ey = identity.eye_y
    for side in (-1, 1):
        x = side * (identity.eye_spacing + 0.012)
        canvas.blob((x, ey + 0.11 - 0.028 * au["AU06"]), (0.05, 0.03), light, 0.12 + 0.2 * au["AU06"])
        if au["AU06"] > 0:
            canvas.blob((x, ey + 0.115 - 0.015 * au["AU06"]), (0.056, 0.038), _BLUSH, 0.33 * au["AU06"])


# ---- glasses ----------------------------------------------------------------------------------

def _draw_glasses(canvas: _Canvas, identity: Identity) -> None:
    if identity.glasses == "none":
        return
    ew, ey, spacing = identity.eye_width, identity.eye_y, identity.eye_spacing
    gx, gy = 1.45 * ew, 1.0 * ew + 0.004
    frame, width = identity.glasses_color, 0.0065
    for side in (-1, 1):
        cx = side * spacing
        if identity.glasses == "round":
            lens = _ellipse(cx, ey + 0.004, gx, gy, 48)
        else:
            lens = _superellipse(cx, ey + 0.004, gx, gy, 4.0, 48)
        glint = _pts([cx - 0.55 * gx, cx - 0.15 * gx], [ey - 0.05 * gy, ey - 0.6 * gy])
        canvas.overlay([(glint, 0.006)], _WHITE, 0.35)
        canvas.line(lens, frame, width, closed=True)
        canvas.line(_pts([side * (spacing + gx * 0.98), side * (identity.face_width + 0.004)],
                         [ey - 0.004, ey + 0.006]), frame, width)
    bridge = _bezier((-(spacing - gx), ey - 0.004), (0.0, ey - 0.02), (spacing - gx, ey - 0.004))
    canvas.line(bridge, frame, width)


# --------------------------------------------------------------------------------------------
# Background and lighting
# --------------------------------------------------------------------------------------------

def _background(identity: Identity, side: int) -> Image.Image:
    """Flat colour, linear gradient or smooth colour noise; computed small, then enlarged."""
    first, second = (np.asarray(c, dtype=np.float64) for c in identity.background_colors)
    if identity.background == "flat":
        return Image.new("RGB", (side, side), identity.background_colors[0])
    n = 64
    grid = (np.arange(n) + 0.5) / n - 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    if identity.background == "gradient":
        along = xx * math.cos(identity.background_angle) + yy * math.sin(identity.background_angle)
        weight = np.clip(along / 1.2 + 0.5, 0, 1)[..., None]
        colors = first + (second - first) * weight
    else:
        rng = np.random.default_rng(identity.texture_seed)
        coarse = _enlarge(rng.random((5, 5)), n)[..., None]
        grain = np.stack([_enlarge(rng.normal(0.0, 1.0, (20, 20)), n) for _ in range(3)], axis=-1)
        colors = first + (second - first) * coarse + 14.0 * grain
    small = Image.fromarray(np.clip(np.round(colors), 0, 255).astype(np.uint8), "RGB")
    return small.resize((side, side), Image.Resampling.BILINEAR)


def _enlarge(values: np.ndarray, n: int) -> np.ndarray:
    image = Image.fromarray(values.astype(np.float32), "F")
    return np.asarray(image.resize((n, n), Image.Resampling.BICUBIC), dtype=np.float64)


def _canonical_grid(identity: Identity, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coordinates of every output pixel centre (inverse of the pose transform)."""
    centers = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(centers, centers, indexing="ij")
    dx, dy = xx - 0.5 - identity.shift_x, yy - 0.5 - identity.shift_y
    c, s = math.cos(math.radians(identity.roll)), math.sin(math.radians(identity.roll))
    return (c * dx + s * dy) / identity.scale, (-s * dx + c * dy) / identity.scale


def _shading(identity: Identity, size: int) -> np.ndarray:
    """Multiplicative light field over the skin: directional light plus darker face borders.

    It depends on the identity only, so it never carries AU changes outside their regions.
    """
    mask_image = Image.new("L", (size, size), 0)
    canvas = _Canvas(mask_image, identity)
    shapes = [_face_outline(identity), _face_outline(identity, _JAW_DROP), _neck(identity), *_ears(identity)]
    for shape in shapes:
        canvas.polygon(shape, 255)
    mask_image = mask_image.filter(ImageFilter.GaussianBlur(max(0.5, size / 96)))
    mask = np.asarray(mask_image, dtype=np.float64) / 255.0
    qx, qy = _canonical_grid(identity, size)
    fw, fh = identity.face_width, identity.face_height
    along = (qx * math.cos(identity.light_angle) + qy * math.sin(identity.light_angle)) / fw
    light = -identity.light_strength * np.clip(along, -1.2, 1.2)
    radius = np.sqrt((qx / fw) ** 2 + (qy / fh) ** 2)
    border = -0.11 * np.clip((radius - 0.62) / 0.45, 0, 1) ** 2
    return 1.0 + mask * (light + border)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be an integer within {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    return int(size)


def render_face(identity: Identity, aus: np.ndarray | Sequence[float], size: int = 128) -> np.ndarray:
    """Draw ``identity`` showing the 17 AU intensities ``aus`` (model order, [0, 1]).

    Returns a ``uint8`` RGB array ``(size, size, 3)``. Deterministic: equal inputs give equal
    pixels, so the same person can be re-rendered at any other expression for evaluation.
    """
    size = _check_size(size)
    vector = check_au_vector(aus, source="render_face AUs").astype(np.float64)
    au = {name: float(v) for name, v in zip(AU_NAMES, vector, strict=True)}
    ss = _supersampling(size)
    canvas = _Canvas(_background(identity, size * ss), identity)
    _draw_head(canvas, identity, au)
    small = canvas.image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.float64) * _shading(identity, size)[..., None]
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _draw_head(canvas: _Canvas, identity: Identity, au: dict[str, float]) -> None:
    """Paint back to front: hair mass, neck, ears, face, features, wrinkles, brows, fringe, glasses."""
    skin = identity.skin
    back, front = _hair_shapes(identity)
    for shape in back:
        canvas.polygon(shape, _scale_color(identity.hair_color, 0.85))
    fh = identity.face_height
    canvas.polygon(_ellipse(0.0, fh + 0.36, identity.face_width * 2.3, 0.24, 64), identity.clothing_color)
    canvas.polygon(_neck(identity), _scale_color(skin, 0.78))
    for ear in _ears(identity):
        canvas.polygon(ear, _scale_color(skin, 0.93))
    for side in (-1, 1):
        fold = _bezier((side * (identity.face_width + 0.012), identity.eye_y + 0.005),
                       (side * (identity.face_width + 0.026), identity.eye_y + 0.04),
                       (side * (identity.face_width + 0.008), identity.eye_y + 0.08))
        canvas.overlay([(fold, 0.005)], _scale_color(skin, 0.5), 0.45)
    canvas.polygon(_face_outline(identity, _JAW_DROP * au["AU26"]), skin)
    for side in (-1, 1):
        _draw_eye(canvas, identity, _eye(identity, side, au), side)
    _draw_nose(canvas, identity, au)
    philtrum = [(_pts([s * 0.011, s * 0.012], [identity.nose_y + 0.024, identity.mouth_y - identity.lip_upper - 0.002]), 0.004)
                for s in (-1, 1)]
    canvas.overlay(philtrum, _scale_color(skin, 0.6), 0.14)
    mouth = _mouth(identity, au)
    _draw_mouth(canvas, identity, mouth)
    _draw_cheeks(canvas, identity, au)
    for side in (-1, 1):
        _draw_eye_wrinkles(canvas, identity, _eye(identity, side, au), side, au)
    _draw_mouth_wrinkles(canvas, identity, mouth, au)
    _draw_brow_wrinkles(canvas, identity, au)
    for side in (-1, 1):
        canvas.polygon(_brow(identity, side, au), identity.brow_color)
    for shape in front:
        canvas.polygon(shape, identity.hair_color)
    strands = [(strand, 0.004) for strand in _hair_strands(identity)]
    canvas.overlay(strands, _scale_color(identity.hair_color, 0.7), 0.5)
    _draw_glasses(canvas, identity)


# --------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------

def _au_boxes(identity: Identity) -> dict[str, list[tuple[float, float, float, float]]]:
    """Canonical ``(x0, x1, y0, y1)`` boxes holding every pixel each AU may change."""
    ew, ey, spacing = identity.eye_width, identity.eye_y, identity.eye_spacing
    fw, fh = identity.face_width, identity.face_height
    brow_y = ey - identity.brow_gap
    ny, my, mw = identity.nose_y, identity.mouth_y, identity.mouth_width
    brows = [(-(spacing + 1.5 * ew + 0.02), spacing + 1.5 * ew + 0.02, brow_y - 0.13, ey - 0.2 * ew)]
    eyes = [(s * spacing - 1.8 * ew, s * spacing + 1.8 * ew, ey - 1.25 * ew, ey + 1.0 * ew) for s in (-1, 1)]
    cheeks = [(min(s * (spacing - 1.3 * ew), s * (spacing + 0.08)), max(s * (spacing - 1.3 * ew), s * (spacing + 0.08)),
               ey - 0.6 * ew, ey + 0.17) for s in (-1, 1)]
    nose = [(-(identity.nose_width * 1.4 + 0.02), identity.nose_width * 1.4 + 0.02, ey - 0.01, ny + 0.04)]
    mouth_x = mw * 1.45 + 0.05
    mouth = [(-mouth_x, mouth_x, ny - 0.035, my + 0.085)]
    chin = [(-mouth_x, mouth_x, ny - 0.035, fh + _JAW_DROP * 0.3)]
    jaw = [(-(fw + 0.01), fw + 0.01, ny - 0.035, fh + _JAW_DROP + 0.02)]
    return {
        "AU01": brows, "AU02": brows, "AU04": brows,
        "AU05": eyes, "AU07": eyes, "AU45": eyes, "AU06": eyes + cheeks,
        "AU09": nose,
        "AU10": mouth, "AU12": mouth, "AU14": mouth, "AU15": mouth, "AU20": mouth, "AU23": mouth, "AU25": mouth,
        "AU17": chin, "AU26": jaw,
    }


def _mask_of(identity: Identity, size: int, shapes: Iterable[np.ndarray]) -> np.ndarray:
    image = Image.new("L", (size, size), 0)
    canvas = _Canvas(image, identity)
    for shape in shapes:
        canvas.polygon(shape, 255)
    return np.asarray(image) > 0


def au_region_masks(identity: Identity, size: int = 128) -> dict[str, np.ndarray]:
    """Per AU name, a boolean ``(size, size)`` mask of the pixels that AU can change.

    The masks are generous boxes around the anatomical region (brows and forehead, eyes,
    eyes and cheeks, nose, mouth, mouth and chin, lower face and jaw); evaluation uses them to
    look at an edit where it should act.
    """
    size = _check_size(size)
    masks = {}
    for name, boxes in _au_boxes(identity).items():
        rects = [_pts([x0, x1, x1, x0], [y0, y0, y1, y1]) for x0, x1, y0, y1 in boxes]
        masks[name] = _mask_of(identity, size, rects)
    return {name: masks[name] for name in AU_NAMES}


def face_region_mask(identity: Identity, size: int = 128) -> np.ndarray:
    """Boolean mask of the face oval at any jaw opening: outside it no AU changes a pixel."""
    size = _check_size(size)
    return _mask_of(identity, size, [_face_outline(identity), _face_outline(identity, _JAW_DROP)])


# --------------------------------------------------------------------------------------------
# Contact sheet (docs, visual checks)
# --------------------------------------------------------------------------------------------

def au_contact_sheet(identity: Identity, size: int = 96, intensity: float = 1.0, columns: int = 6) -> np.ndarray:
    """Neutral face followed by each AU alone at ``intensity``, labelled, as one RGB array."""
    tiles: list[tuple[str, np.ndarray]] = [("neutral", np.zeros(NUM_AUS))]
    for index, name in enumerate(AU_NAMES):
        aus = np.zeros(NUM_AUS)
        aus[index] = intensity
        tiles.append((name, aus))
    label = 12
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * size, rows * (size + label)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (name, aus) in enumerate(tiles):
        x, y = (k % columns) * size, (k // columns) * (size + label)
        sheet.paste(Image.fromarray(render_face(identity, aus, size)), (x, y + label))
        draw.text((x + 2, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


# --------------------------------------------------------------------------------------------
# Data set writer
# --------------------------------------------------------------------------------------------

_README = """Synthetic GANimation data set (procedural faces with ground-truth Action Units)

Made by ganimation.synth.write_synthetic_dataset: {identities} identities x {per_identity} images,
{size}x{size} pixels, seed {seed}, variations {variations}, single AUs {single_aus}. Every face is
drawn by a renderer from identity parameters and 17 AU intensities, so the AU labels are exact, not
estimated.

images/<identity>_<k>.png   the face crops
aus.csv                     filename,identity,AU01_r,...,AU45_r on OpenFace's 0-5 scale
train_ids.csv, test_ids.csv one filename per line (header "filename"), split by identity
identities.json             each identity's parameters, to re-render it at other AUs:
                            ganimation.synth.Identity.from_dict(...) + render_face(...)
"""


def _identity_rng(seed: int, index: int) -> np.random.Generator:
    """Independent stream per identity, stable whatever the number of identities requested."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _csv_aus(aus: np.ndarray) -> tuple[list[str], np.ndarray]:
    """AU texts for aus.csv (3 decimals on OpenFace's 0-5 scale) and the model-scale values
    they read back as, which are the values the image must be rendered at."""
    texts = [f"{float(v) * OPENFACE_SCALE:.3f}" for v in aus]
    return texts, np.array([float(text) for text in texts]) / OPENFACE_SCALE


def _render_identity(images: Path, name: str, index: int, seed: int, per_identity: int, size: int,
                     variations: float, single_aus: float = 0.0) -> tuple[Identity, list[list[str]]]:
    """Sample identity ``index`` of ``seed``, render its images into ``images`` and return its CSV rows.

    Everything random comes from the identity's own stream, so identities can be rendered in any
    order or process and the data set is the same.
    """
    rng = _identity_rng(seed, index)
    person = sample_identity(rng)
    rows: list[list[str]] = []
    drawn: list[np.ndarray] = []
    for k in range(per_identity):
        # Draws are skipped at 0 so that data sets made before the options keep their seeds.
        if single_aus > 0 and rng.random() < single_aus:
            texts, aus = _csv_aus(single_au(rng))
        elif variations > 0 and drawn and rng.random() < variations:
            texts, aus = _csv_aus(vary_aus(rng, drawn[int(rng.integers(len(drawn)))]))
        else:
            texts, aus = _csv_aus(sample_aus(rng))
        drawn.append(aus)
        filename = f"{name}_{k:03d}.png"
        save_image(images / filename, render_face(person, aus, size))
        rows.append([filename, name, *texts])
    return person, rows


def write_synthetic_dataset(out_dir: str | Path, identities: int, per_identity: int, size: int = 128,
                            seed: int = 0, test_fraction: float = 0.2, variations: float = 0.0,
                            workers: int = 1, single_aus: float = 0.0) -> Path:
    """Render a labelled data set in the layout real users bring (see docs/synth.md).

    Images are rendered at the AUs *as written* to aus.csv, so re-rendering an identity from
    identities.json with the CSV's AUs reproduces each image exactly. The train/test split is by
    identity, so test faces are people the model never saw. ``variations`` is the chance that an
    identity's image after its first is a small change (:func:`vary_aus`) of one of its earlier
    images instead of a fresh :func:`sample_aus` draw, as neighbouring frames of a video are; at 0
    (the default) a seed gives the same images, AUs and split as before the option existed.
    ``single_aus`` is the chance that an image shows one AU alone (:func:`single_au`), drawn
    before the other two; 0 (the default) leaves a seed's data set as it was.
    ``workers`` processes render identities in parallel (0 = one per CPU core); the files written
    do not depend on it.
    """
    size = _check_size(size)
    if identities < 1 or per_identity < 1:
        raise ValueError("identities and per_identity must be at least 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be within [0, 1), got {test_fraction}")
    if not 0.0 <= variations <= 1.0:
        raise ValueError(f"variations must be within [0, 1], got {variations}")
    if not 0.0 <= single_aus <= 1.0:
        raise ValueError(f"single_aus must be within [0, 1], got {single_aus}")
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per core) or more, got {workers}")
    if workers == 0:  # the cores this process may use (sched_getaffinity is Linux-only)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, identities)
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = [f"id{i:04d}" for i in range(identities)]
    people: dict[str, Identity] = {}
    rows: list[list[str]] = []
    files_of: dict[str, list[str]] = {}
    render = functools.partial(_render_identity, images, seed=seed, per_identity=per_identity, size=size,
                               variations=variations, single_aus=single_aus)
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(tqdm(total=identities * per_identity, desc="synth", unit="img"))
        if workers > 1:
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(max_workers=workers))
            # map keeps the identities in order; chunks amortise the inter-process round trips
            rendered = pool.map(render, names, range(identities), chunksize=max(1, identities // (8 * workers)))
        else:
            rendered = map(render, names, range(identities))
        for name, (person, person_rows) in zip(names, rendered):
            people[name] = person
            rows.extend(person_rows)
            files_of[name] = [row[0] for row in person_rows]
            progress.update(per_identity)
    test_names = _test_identities(names, test_fraction, seed)
    _write_csv(out / "aus.csv", ["filename", "identity", *OPENFACE_COLUMNS], rows)
    for split, chosen in (("train", [n for n in names if n not in test_names]), ("test", [n for n in names if n in test_names])):
        _write_csv(out / f"{split}_ids.csv", ["filename"], [[f] for n in chosen for f in files_of[n]])
    payload = {"format": "ganimation-synth-identities", "version": 1, "size": size, "seed": seed,
               "identities": {name: person.to_dict() for name, person in people.items()}}
    write_text_atomic(out / "identities.json", json.dumps(payload, indent=1) + "\n")
    write_text_atomic(out / "README.txt", _README.format(identities=identities, per_identity=per_identity,
                                                         size=size, seed=seed, variations=variations,
                                                         single_aus=single_aus))
    logger.info("wrote %d images of %d identities (%d test) to %s", len(rows), identities, len(test_names), out)
    return out


def _test_identities(names: list[str], fraction: float, seed: int) -> set[str]:
    if fraction <= 0 or len(names) < 2:
        return set()
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,))).permutation(len(names))
    return {names[i] for i in order[:count]}


def _write_csv(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def load_identities(path: str | Path) -> dict[str, Identity]:
    """Read identities.json written by :func:`write_synthetic_dataset`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {name: Identity.from_dict(params) for name, params in data["identities"].items()}
