"""The testbed's task generator: exact templates, geometry, balance and reproducibility."""

import re
from collections import Counter

import numpy as np
import pytest

from smoothguard.testbed import (
    COLOURS,
    KIND_WEIGHTS,
    KINDS,
    SHAPES,
    TASK_QUESTIONS,
    Shape,
    all_texts,
    describe,
    make_example,
    make_image,
)
from smoothguard.testbed.data import COLOUR_RGB

C, S = "|".join(COLOURS), "|".join(SHAPES)
PHRASE = rf"(?:{C}) (?:{S})"
PATTERNS = {
    "yesno": (rf"Is there a ({C}) ({S}) in the image\?", r"Yes\.|No\."),
    "colour": (rf"What colour is the ({S})\?", rf"The ({S}) is ({C})\."),
    "count": (r"How many shapes are there\?", r"There is 1 shape\.|There are [23] shapes\."),
    "describe": (
        r"Describe the image\.",
        rf"A {PHRASE}\.|A {PHRASE} and a {PHRASE}\.|A {PHRASE}, a {PHRASE} and a {PHRASE}\.",
    ),
}


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(2024)
    return [make_example(rng) for _ in range(1000)]


def test_templates_are_verbatim():
    assert TASK_QUESTIONS == {
        "yesno": "Is there a {colour} {shape} in the image?",
        "colour": "What colour is the {shape}?",
        "count": "How many shapes are there?",
        "describe": "Describe the image.",
    }
    assert KINDS == ("yesno", "colour", "count", "describe")
    assert KIND_WEIGHTS == {"yesno": 0.35, "colour": 0.2, "count": 0.15, "describe": 0.3}


def test_every_example_follows_its_template(examples):
    for e in examples:
        question, answer = PATTERNS[e.kind]
        assert re.fullmatch(question, e.question), e.question
        assert re.fullmatch(answer, e.answer), e.answer
        assert e.image.size == (64, 64) and e.image.mode == "RGB"


def test_answers_are_true(examples):
    for e in examples:
        present = {(s.colour, s.shape) for s in e.shapes}
        if e.kind == "yesno":
            colour, shape = re.fullmatch(PATTERNS["yesno"][0], e.question).groups()
            assert (e.answer == "Yes.") == ((colour, shape) in present)
        elif e.kind == "colour":
            shape = re.fullmatch(PATTERNS["colour"][0], e.question).group(1)
            matching = [s for s in e.shapes if s.shape == shape]
            assert len(matching) == 1, "asked only about a shape that appears once"
            assert e.answer == f"The {shape} is {matching[0].colour}."
        elif e.kind == "count":
            n = len(e.shapes)
            assert e.answer == ("There is 1 shape." if n == 1 else f"There are {n} shapes.")
        else:
            assert e.answer == describe(e.shapes)


def test_kind_mix_and_yes_no_balance(examples):
    counts = Counter(e.kind for e in examples)
    for kind, weight in KIND_WEIGHTS.items():
        assert abs(counts[kind] / len(examples) - weight) < 0.05
    rng = np.random.default_rng(7)
    yesno = [make_example(rng, kind="yesno") for _ in range(1000)]
    assert 0.45 < np.mean([e.answer == "Yes." for e in yesno]) < 0.55


def test_hard_negatives_present():
    rng = np.random.default_rng(11)
    negatives = [e for e in (make_example(rng, kind="yesno") for _ in range(800)) if e.answer == "No."]
    swapped = same_shape = same_colour = 0
    for e in negatives:
        colour, shape = re.fullmatch(PATTERNS["yesno"][0], e.question).groups()
        colours, shapes = {s.colour for s in e.shapes}, {s.shape for s in e.shapes}
        swapped += colour in colours and shape in shapes
        same_shape += shape in shapes
        same_colour += colour in colours
    assert swapped / len(negatives) > 0.2  # the colour of another shape on a shape that is there
    assert same_shape / len(negatives) > 0.5  # the shape in another colour
    assert same_colour / len(negatives) > 0.3


def test_shapes_never_overlap_and_are_drawn_where_they_say():
    rng = np.random.default_rng(3)
    seen = Counter()
    for _ in range(300):
        image, shapes = make_image(rng)
        assert 1 <= len(shapes) <= 3
        seen[len(shapes)] += 1
        pixels = np.asarray(image).astype(int)
        for i, a in enumerate(shapes):
            x0, y0, x1, y1 = a.bbox
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            for b in shapes[i + 1 :]:
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.bbox, b.bbox
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
                assert a.centre_x != b.centre_x
            # a point inside every shape (circle, square, triangle) has the shape's colour, within the jitter
            cx, cy = (x0 + x1 - 1) // 2, (y0 + 2 * y1) // 3
            assert np.abs(pixels[cy, cx] - np.array(COLOUR_RGB[a.colour])).max() <= 12
    assert set(seen) == {1, 2, 3}


def test_describe_runs_left_to_right():
    a = Shape("red", "circle", (40, 0, 50, 10))
    b = Shape("blue", "square", (2, 30, 12, 40))
    c = Shape("green", "triangle", (20, 50, 30, 60))
    assert describe([a]) == "A red circle."
    assert describe([a, b]) == "A blue square and a red circle."
    assert describe([a, b, c]) == "A blue square, a green triangle and a red circle."
    rng = np.random.default_rng(5)
    for _ in range(200):
        e = make_example(rng, kind="describe")
        order = sorted(e.shapes, key=lambda s: (s.bbox[0] + s.bbox[2]) / 2)
        phrases = re.findall(PHRASE, e.answer)
        assert phrases == [f"{s.colour} {s.shape}" for s in order]


def test_seeded_reproducibility():
    one = [make_example(np.random.default_rng(42)) for _ in range(3)]
    two = [make_example(np.random.default_rng(42)) for _ in range(3)]
    for x, y in zip(one, two, strict=True):
        assert (x.question, x.answer, x.kind, x.shapes) == (y.question, y.answer, y.kind, y.shapes)
        assert x.image.tobytes() == y.image.tobytes()
    other = make_example(np.random.default_rng(43))
    assert other.image.tobytes() != one[0].image.tobytes()


def test_forced_kind_size_and_errors():
    rng = np.random.default_rng(0)
    for kind in KINDS:
        assert make_example(rng, kind=kind).kind == kind
    assert make_example(rng, size=96).image.size == (96, 96)
    with pytest.raises(ValueError, match="kind"):
        make_example(rng, kind="colours")
    with pytest.raises(ValueError, match="n_shapes"):
        make_image(rng, n_shapes=4)


def test_all_texts_cover_every_generated_text(examples):
    texts = set(all_texts())
    assert len(texts) == len(all_texts())
    for e in examples:
        assert e.question in texts and e.answer in texts
