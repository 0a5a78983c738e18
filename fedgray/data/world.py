"""The procedural captioned-image world: scenes, four rendering domains, captions, prompts.

A scene is one shape (7 kinds) or one digit (0-9) in one of 8 colours, 2 sizes and 5
positions (digits are always centred), sampled deterministically from ``(seed, index)``.
Shapes are drawn with PIL at 4x supersampling as a coverage mask and composited at the
target resolution. ``photo`` is the source domain; ``sketch``, ``inverted`` and ``noisy``
are the shifted targets, rendered from the same scene and the same appearance draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "ring")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "white", "black")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
DIGITS = tuple(range(10))
CLASS_NAMES = SHAPES + tuple(f"digit {d}" for d in DIGITS)
DIGIT_FRACTION = 0.3
NOISE_SIGMA = 0.10  # noisy domain: Gaussian noise std in [0, 1] units, after a 0.8 px blur

_RGB = {
    "red": (215, 35, 35), "orange": (245, 135, 25), "yellow": (240, 220, 35),
    "green": (35, 165, 55), "blue": (35, 75, 215), "purple": (135, 55, 185),
    "white": (248, 248, 248), "black": (12, 12, 12),
}  # fmt: skip
_CENTRES = {
    "top left": (0.3, 0.3), "top right": (0.7, 0.3), "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7), "center": (0.5, 0.5),
}  # fmt: skip
_RADIUS = {"small": 0.16, "large": 0.25}  # shape radius as a fraction of the image side
_DIGIT_HEIGHT = {"small": 0.45, "large": 0.7}  # glyph height as a fraction of the side
_SUPERSAMPLE = 4
_OUTLINE_PX = 1.3  # sketch line width in output pixels
_APPEARANCE, _NOISE = 1, 2  # rng stream tags next to (seed, index)


@dataclass(frozen=True)
class Scene:
    """One object of the world: a shape or a digit with its colour, size and position."""

    kind: str  # "shape" or "digit"
    shape: str | None
    digit: int | None
    colour: str
    size: str
    position: str

    @property
    def name(self) -> str:
        """The class name, e.g. ``"circle"`` or ``"digit 7"``."""
        return self.shape if self.shape is not None else f"digit {self.digit}"

    @property
    def label(self) -> int:
        """The class index into :data:`CLASS_NAMES`."""
        return CLASS_NAMES.index(self.name)


def sample_scene(index: int, *, seed: int) -> Scene:
    """Sample scene ``index`` of world ``seed`` (deterministic, independent per index)."""
    rng = np.random.default_rng([seed, index])
    colour, size = str(rng.choice(COLOURS)), str(rng.choice(SIZES))
    if rng.random() < DIGIT_FRACTION:
        return Scene("digit", None, int(rng.integers(10)), colour, size, "center")
    return Scene("shape", str(rng.choice(SHAPES)), None, colour, size, str(rng.choice(POSITIONS)))


# ---------------------------------------------------------------- geometry (4x canvas)
def _star(r: float) -> list[tuple[float, float]]:
    return [((r if k % 2 == 0 else 0.45 * r), math.pi / 5 * k - math.pi / 2) for k in range(10)]


def _cross(r: float) -> list[tuple[float, float]]:
    w = 0.36 * r  # half arm width
    corners = [(w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r)]
    corners += [(-x, -y) for x, y in corners]
    return [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]


_POLYGONS: dict[str, Callable[[float], list[tuple[float, float]]]] = {
    "square": lambda r: [(r * 1.1, math.pi / 4 + k * math.pi / 2) for k in range(4)],
    "triangle": lambda r: [(r * 1.15, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)],
    "star": _star,
    "cross": _cross,
    "diamond": lambda r: [(r * (1.1 if k % 2 else 0.8), k * math.pi / 2) for k in range(4)],
}


@lru_cache(maxsize=256)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _mask(scene: Scene, rng: np.random.Generator, *, side: int, outline: bool) -> np.ndarray:
    """Coverage in [0, 1] of the object (filled, or its outline), shape ``[side, side]``."""
    big = side * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = (np.array(_CENTRES[scene.position]) + rng.uniform(-0.03, 0.03, 2)) * big
    scale, turn = rng.uniform(0.9, 1.1), math.radians(rng.uniform(-8.0, 8.0))
    line = round(_OUTLINE_PX * _SUPERSAMPLE)
    if scene.digit is not None:
        height = _DIGIT_HEIGHT[scene.size] * big * scale
        font = _font(round(height / 0.72))  # digit glyphs are ~72% of the em size
        # a filled digit is emboldened by a thin stroke; a sketched one is that stroke's outline
        interior = 0 if outline else 255
        stroke = line if outline else line // 2
        draw.text(
            (cx, cy), str(scene.digit), font=font, anchor="mm",
            fill=interior, stroke_width=stroke, stroke_fill=255,
        )  # fmt: skip
    elif scene.shape in ("circle", "ring"):
        r = _RADIUS[scene.size] * big * scale
        for k, ink in ((1.0, 255), (0.55, 0)) if scene.shape == "ring" else ((1.0, 255),):
            box = (cx - k * r, cy - k * r, cx + k * r, cy + k * r)
            if outline:
                draw.ellipse(box, outline=255, width=line)
            else:
                draw.ellipse(box, fill=ink)
    else:
        assert scene.shape is not None  # a scene without a digit has a shape
        polar = _POLYGONS[scene.shape](_RADIUS[scene.size] * big * scale)
        points = [(cx + d * math.cos(a + turn), cy + d * math.sin(a + turn)) for d, a in polar]
        if outline:
            draw.polygon(points, outline=255, width=line)
        else:
            draw.polygon(points, fill=255)
    small = canvas.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ---------------------------------------------------------------- domains
@dataclass(frozen=True)
class _Job:
    scene: Scene
    index: int
    seed: int
    side: int
    noise_sigma: float

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.index, stream])


@lru_cache(maxsize=8)
def _grid(side: int) -> np.ndarray:
    return np.mgrid[0:side, 0:side].astype(np.float32) / (side - 1)


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A muted two-colour gradient with a random stripe texture and grain, ``[side, side, 3]``."""
    yy, xx = _grid(side)
    a1, a2 = rng.uniform(0.0, 2 * math.pi, 2)
    ramp = (xx * math.cos(a1) + yy * math.sin(a1) + 1.0) / 3.0
    ends = rng.uniform(70.0, 185.0, (2, 1)) + rng.uniform(-25.0, 25.0, (2, 3))
    grad = ends[0] + ramp[..., None] * (ends[1] - ends[0])
    waves = (xx * math.cos(a2) + yy * math.sin(a2)) * rng.uniform(2.0, 6.0) * 2 * math.pi
    texture = 10.0 * np.sin(waves + rng.uniform(0.0, 2 * math.pi))
    texture += rng.normal(0.0, 4.0, (side, side))
    return grad + texture[..., None]


def _photo(job: _Job) -> np.ndarray:
    rng = job.rng(_APPEARANCE)
    cover = _mask(job.scene, rng, side=job.side, outline=False)[..., None]
    background = _background(rng, job.side)
    colour = np.array(_RGB[job.scene.colour]) + rng.uniform(-15.0, 15.0, 3)
    return np.clip(background * (1.0 - cover) + colour * cover, 0, 255).round().astype(np.uint8)


def _sketch(job: _Job) -> np.ndarray:
    cover = _mask(job.scene, job.rng(_APPEARANCE), side=job.side, outline=True)
    grey = (255.0 * (1.0 - cover)).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _inverted(job: _Job) -> np.ndarray:
    return 255 - _photo(job)


def _noisy(job: _Job) -> np.ndarray:
    blurred = Image.fromarray(_photo(job)).filter(ImageFilter.GaussianBlur(radius=0.8))
    noise = job.rng(_NOISE).normal(0.0, job.noise_sigma * 255.0, (job.side, job.side, 3))
    return np.clip(np.asarray(blurred, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8)


_RENDERERS: dict[str, Callable[[_Job], np.ndarray]] = {
    "photo": _photo,
    "sketch": _sketch,
    "inverted": _inverted,
    "noisy": _noisy,
}
DOMAINS = tuple(_RENDERERS)
_COLOURLESS = frozenset({"sketch"})  # domains whose images (and captions) carry no colour


def _check_domain(domain: str) -> None:
    if domain not in _RENDERERS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")


def render(
    scene: Scene,
    *,
    domain: str,
    index: int,
    seed: int,
    image_size: int = 32,
    noise_sigma: float = NOISE_SIGMA,
) -> np.ndarray:
    """Draw ``scene`` in ``domain`` as a uint8 ``[image_size, image_size, 3]`` array.

    Appearance (jitter, background, colour shade) and noise come from ``(seed, index)``, so
    the same scene renders identically on every call and pairs up across domains.
    """
    _check_domain(domain)
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    return _RENDERERS[domain](_Job(scene, index, seed, image_size, noise_sigma))


# ---------------------------------------------------------------- text
_SHAPE_TEMPLATES = ("{a}{where}", "{a}{where}", "there is {a}{where}", "an image of {a}{where}")
_DIGIT_TEMPLATES = (
    "the digit {d}{tint}", "the digit {d}{tint}", "the number {d}{tint}", "{a} digit {d}{tint}",
)  # fmt: skip


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _full(scene: Scene, coloured: bool, rng: np.random.Generator | None) -> str:
    if scene.digit is not None:
        return f"the digit {scene.digit}" + (f" in {scene.colour}" if coloured else "")
    assert scene.shape is not None  # a scene without a digit has a shape
    words = (scene.size, scene.colour, scene.shape) if coloured else (scene.size, scene.shape)
    return f"{_a(' '.join(words))} at the {scene.position}"


def _varied(scene: Scene, coloured: bool, rng: np.random.Generator | None) -> str:
    if rng is None:
        raise ValueError("caption style 'varied' needs an rng")
    size, colour, place = rng.random(3) < 0.5
    colour = colour and coloured
    if scene.digit is not None:
        tint = f" in {scene.colour}" if colour else ""
        return str(rng.choice(_DIGIT_TEMPLATES)).format(d=scene.digit, tint=tint, a=_a(scene.size))
    assert scene.shape is not None  # a scene without a digit has a shape
    words = [w for w, keep in ((scene.size, size), (scene.colour, colour)) if keep]
    where = f" at the {scene.position}" if place else ""
    thing = _a(" ".join([*words, scene.shape]))
    return str(rng.choice(_SHAPE_TEMPLATES)).format(a=thing, where=where)


_CAPTION_STYLES: dict[str, Callable[[Scene, bool, np.random.Generator | None], str]] = {
    "full": _full,
    "varied": _varied,
}


def caption(
    scene: Scene, *, domain: str, style: str = "full", rng: np.random.Generator | None = None
) -> str:
    """Describe ``scene`` as seen in ``domain``; colour words are left out where it has none.

    ``"full"`` names everything ("a small red circle at the top left", "the digit 7 in
    blue"); ``"varied"`` (pretraining; needs ``rng``) drops attributes at random and varies
    the template, so that the short :func:`class_prompts` occur among the captions.
    """
    _check_domain(domain)
    if style not in _CAPTION_STYLES:
        raise ValueError(f"unknown caption style {style!r}; known: {', '.join(_CAPTION_STYLES)}")
    return _CAPTION_STYLES[style](scene, domain not in _COLOURLESS, rng)


def caption_vocabulary(*, domain: str) -> list[str]:
    """Every ``"full"`` caption ``domain`` can have: the world's public caption grammar.

    It depends on no sample, so DP-SGD may use it as the negatives of each sample's loss.
    """
    _check_domain(domain)
    colours = COLOURS if domain not in _COLOURLESS else (None,)
    scenes = [
        Scene("shape", shape, None, colour or "", size, position)
        for shape in SHAPES
        for colour in colours
        for size in SIZES
        for position in POSITIONS
    ]
    scenes += [
        Scene("digit", None, digit, colour or "", "small", "center")
        for digit in DIGITS
        for colour in colours
    ]
    return list(dict.fromkeys(caption(scene, domain=domain) for scene in scenes))


def class_prompts(*, domain: str) -> list[list[str]]:
    """Prompts per class of :data:`CLASS_NAMES`: the bare name, plus one per colour where the
    domain shows colour. Score a class by the logsumexp over its prompts."""
    _check_domain(domain)
    colours = COLOURS if domain not in _COLOURLESS else ()
    shapes = [[_a(s)] + [_a(f"{c} {s}") for c in colours] for s in SHAPES]
    digits = [[f"the digit {d}"] + [f"the digit {d} in {c}" for c in colours] for d in DIGITS]
    return shapes + digits
