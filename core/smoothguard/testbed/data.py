"""The testbed's task: synthetic shape images and the questions asked about them (numpy + PIL only).

An image is a light, slightly textured background with one to three filled shapes (circle, square,
triangle) in red, green, blue or yellow, at random sizes and places, never overlapping. Four kinds of
question are asked about it, always with exactly these templates:

=========  =============================================  ==============================================
kind       question                                       answer
=========  =============================================  ==============================================
yesno      ``Is there a {colour} {shape} in the image?``  ``Yes.`` / ``No.`` (half negative)
colour     ``What colour is the {shape}?``                ``The {shape} is {colour}.``
count      ``How many shapes are there?``                 ``There are {n} shapes.`` / ``There is 1 shape.``
describe   ``Describe the image.``                        ``A {colour} {shape}, a {colour} {shape} and a
                                                          {colour} {shape}.`` (left to right)
=========  =============================================  ==============================================

Everything is drawn from the ``numpy.random.Generator`` passed in, so the same generator state gives the
same example. Anyone can draw their own test images that follow these rules.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ANSWER_TEMPLATES",
    "COLOURS",
    "COLOUR_RGB",
    "KINDS",
    "KIND_WEIGHTS",
    "SHAPES",
    "TASK_QUESTIONS",
    "Example",
    "Shape",
    "all_texts",
    "describe",
    "make_example",
    "make_image",
]

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Nominal fill colour of each colour name, RGB 0-255; each drawn shape is jittered by up to +-12 per channel.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (235, 200, 30),
}

#: The question kinds, in a fixed order.
KINDS: tuple[str, ...] = ("yesno", "colour", "count", "describe")
#: The default mix of question kinds (probabilities, summing to 1).
KIND_WEIGHTS: dict[str, float] = {"yesno": 0.35, "colour": 0.2, "count": 0.15, "describe": 0.3}

#: The question template of each kind (keep verbatim: the shipped models were trained on these).
TASK_QUESTIONS: dict[str, str] = {
    "yesno": "Is there a {colour} {shape} in the image?",
    "colour": "What colour is the {shape}?",
    "count": "How many shapes are there?",
    "describe": "Describe the image.",
}
#: The answer templates. ``describe`` joins one ``{colour} {shape}`` phrase per shape, left to right.
ANSWER_TEMPLATES: dict[str, str] = {
    "yes": "Yes.",
    "no": "No.",
    "colour": "The {shape} is {colour}.",
    "count": "There are {n} shapes.",
    "count_one": "There is 1 shape.",
    "describe": "A {colour} {shape}, a {colour} {shape} and a {colour} {shape}.",
}

MAX_SHAPES = 3
_SIZE_RANGE = (0.2, 0.36)  # shape side as a fraction of the image side
_GAP = 2  # minimum pixels between two shapes' boxes
_TRIES = 200


class Shape(NamedTuple):
    """One drawn shape. ``bbox`` is (left, top, right, bottom) in pixels, right and bottom exclusive."""

    colour: str
    shape: str
    bbox: tuple[int, int, int, int]

    @property
    def centre_x(self) -> float:
        """Horizontal centre in pixels."""
        return (self.bbox[0] + self.bbox[2]) / 2


@dataclass(frozen=True)
class Example:
    """One question about one image. ``kind`` is one of :data:`KINDS`; ``shapes`` as drawn."""

    image: Image.Image
    question: str
    answer: str
    kind: str
    shapes: tuple[Shape, ...] = ()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A light background, (size, size, 3) float32 in 0-255: a tinted base, a soft gradient and fine grain."""
    base = rng.uniform(210.0, 245.0, size=3).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0.0, 2 * np.pi)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    amplitude = rng.uniform(0.0, 8.0)
    grain = rng.normal(0.0, 3.0, size=(size, size, 1)).astype(np.float32)
    return base + (amplitude * gradient)[:, :, None] + grain


def _place(rng: np.random.Generator, size: int, n: int) -> list[tuple[int, int, int, int]] | None:
    """``n`` square boxes that neither overlap (with a gap) nor share a horizontal centre; None if it fails."""
    low, high = max(4, round(_SIZE_RANGE[0] * size)), max(5, round(_SIZE_RANGE[1] * size))
    min_dx = max(2, size // 16)  # centres this far apart horizontally, so "left to right" is visible
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(n):
        for _ in range(_TRIES):
            side = int(rng.integers(low, high + 1))
            x0 = int(rng.integers(1, size - side))
            y0 = int(rng.integers(1, size - side))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, other, min_dx) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], min_dx: int) -> bool:
    separated = a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1]
    return separated and abs((a[0] + a[2]) - (b[0] + b[2])) >= 2 * min_dx


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)


def make_image(
    rng: np.random.Generator, size: int = 64, n_shapes: int | None = None
) -> tuple[Image.Image, list[Shape]]:
    """A (size x size) RGB image and its shapes in drawing order. ``n_shapes``: 1-3, default uniform."""
    n = int(rng.integers(1, MAX_SHAPES + 1)) if n_shapes is None else n_shapes
    if not 1 <= n <= MAX_SHAPES:
        raise ValueError(f"n_shapes must be 1 to {MAX_SHAPES}, got {n}")
    boxes = None
    while boxes is None:
        boxes = _place(rng, size, n)
    pixels = _background(rng, size)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    shapes = []
    for box in boxes:
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        form = SHAPES[int(rng.integers(len(SHAPES)))]
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOUR_RGB[colour], jitter, strict=True))
        _draw(draw, form, box, fill)
        shapes.append(Shape(colour, form, box))
    return image, shapes


def describe(shapes: list[Shape] | tuple[Shape, ...]) -> str:
    """The ``describe`` answer: the shapes from left to right by their centres."""
    phrases = [f"a {s.colour} {s.shape}" for s in sorted(shapes, key=lambda s: s.centre_x)]
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return text[0].upper() + text[1:] + "."


def _count_answer(n: int) -> str:
    return ANSWER_TEMPLATES["count_one"] if n == 1 else ANSWER_TEMPLATES["count"].format(n=n)


def _yesno(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str, str]:
    """(colour, shape, answer): positive half the time; negatives favour hard ones."""
    present = {(s.colour, s.shape) for s in shapes}
    if rng.random() < 0.5:
        colour, shape = sorted(present)[int(rng.integers(len(present)))]
        return colour, shape, ANSWER_TEMPLATES["yes"]
    colours, kinds = {c for c, _ in present}, {k for _, k in present}
    absent = [p for p in itertools.product(COLOURS, SHAPES) if p not in present]
    pools = [
        [p for p in absent if p[0] in colours and p[1] in kinds],  # colours and shapes swapped between shapes
        [p for p in absent if p[1] in kinds],  # a shape in the image, in another colour
        [p for p in absent if p[0] in colours],  # a colour in the image, on another shape
        absent,
    ]
    weights = np.array([0.4, 0.25, 0.2, 0.15]) * np.array([bool(pool) for pool in pools])
    pool = pools[int(rng.choice(len(pools), p=weights / weights.sum()))]
    colour, shape = pool[int(rng.integers(len(pool)))]
    return colour, shape, ANSWER_TEMPLATES["no"]


def make_example(rng: np.random.Generator, size: int = 64, kind: str | None = None) -> Example:
    """One example. ``kind``: one of :data:`KINDS`, or None to draw it with :data:`KIND_WEIGHTS`."""
    if kind is None:
        kind = KINDS[int(rng.choice(len(KINDS), p=[KIND_WEIGHTS[k] for k in KINDS]))]
    elif kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    while True:
        image, shapes = make_image(rng, size)
        if kind == "yesno":
            colour, shape, answer = _yesno(rng, shapes)
            question = TASK_QUESTIONS["yesno"].format(colour=colour, shape=shape)
        elif kind == "colour":
            unique = [s for s in shapes if sum(t.shape == s.shape for t in shapes) == 1]
            if not unique:
                continue  # asked only about a shape that appears once: draw another image
            target = unique[int(rng.integers(len(unique)))]
            question = TASK_QUESTIONS["colour"].format(shape=target.shape)
            answer = ANSWER_TEMPLATES["colour"].format(shape=target.shape, colour=target.colour)
        elif kind == "count":
            question, answer = TASK_QUESTIONS["count"], _count_answer(len(shapes))
        else:
            question, answer = TASK_QUESTIONS["describe"], describe(shapes)
        return Example(image, question, answer, kind, tuple(shapes))


def all_texts() -> list[str]:
    """Every question and answer the task can produce (for training the tokenizer), in a fixed order."""
    pairs = list(itertools.product(COLOURS, SHAPES))
    texts = [TASK_QUESTIONS["count"], TASK_QUESTIONS["describe"], ANSWER_TEMPLATES["yes"], ANSWER_TEMPLATES["no"]]
    texts += [TASK_QUESTIONS["yesno"].format(colour=c, shape=s) for c, s in pairs]
    texts += [TASK_QUESTIONS["colour"].format(shape=s) for s in SHAPES]
    texts += [ANSWER_TEMPLATES["colour"].format(shape=s, colour=c) for c, s in pairs]
    texts += [_count_answer(n) for n in range(1, MAX_SHAPES + 1)]
    for n in range(1, MAX_SHAPES + 1):
        for combo in itertools.product(pairs, repeat=n):
            texts.append(describe([Shape(c, s, (i * 2, 0, i * 2 + 1, 1)) for i, (c, s) in enumerate(combo)]))
    return texts
