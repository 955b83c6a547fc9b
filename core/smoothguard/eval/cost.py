"""What an evaluation will cost before it runs (``smoothguard eval BENCH ... --dry-run``).

Per run (sigma): the items still to answer (those already in ``OUT/answers.jsonl`` are not asked again), the
model calls (1 per item undefended, ``n_samples`` guarded; adaptive runs use at most that), and estimates of
the prompt and image tokens those calls send, plus the most output tokens they may generate.

The estimates are deliberately simple and say so:

- prompt tokens: ``ceil(characters / 4) + 10`` per call (English text at about 4 characters a token, plus the
  chat template's role markers);
- image tokens, from the size the model looks at (the ``image_resize`` rule applied to the image's size, read
  from its file header): ``openai``: 85 + 170 per 512-px tile (OpenAI's high-detail pricing); ``anthropic``:
  width x height / 750; ``qwen2-vl`` and every other rule: one token per 28 x 28 pixels (Qwen2-VL's merged
  patches; LLaVA-1.5 uses a fixed 576 whatever the size, so this overestimates small images and
  underestimates large ones there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunCost", "cost_table", "estimate", "image_tokens", "prompt_tokens"]

_TEMPLATE_TOKENS = 10


@dataclass(frozen=True)
class RunCost:
    """The cost of one run. ``calls`` may be fewer in an adaptive run (``at_most`` is then True)."""

    key: str
    sigma: float
    n_samples: int
    items: int
    todo: int
    calls: int
    prompt_tokens: int
    image_tokens: int
    max_output_tokens: int
    at_most: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prompt_tokens(text: str) -> int:
    """Estimated prompt tokens of one call: ``ceil(len(text) / 4) + 10``."""
    return math.ceil(len(text) / 4) + _TEMPLATE_TOKENS


def image_tokens(rule: Any, width: int, height: int) -> int:
    """Estimated tokens of one ``width x height`` image for a model whose input size follows ``rule`` (an
    :mod:`smoothguard.image_resize` rule other than ``"auto"``)."""
    from smoothguard.image_resize import target_size

    w, h = target_size(rule, width, height)
    if rule == "openai":
        return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)
    if rule == "anthropic":
        return math.ceil(w * h / 750)
    return max(1, round(w / 28) * round(h / 28))


def estimate(dataset: Any, specs: Sequence[Any], *, rule: Any, max_output_tokens: int,
             out: str | Path | None = None, retry_errors: bool = False) -> list[RunCost]:
    """One :class:`RunCost` per spec; ``out``: an output folder whose logged answers are left out (read only;
    failed ones too, unless ``retry_errors``)."""
    from PIL import Image

    done = _logged(Path(out) / "answers.jsonl", retry_errors) if out is not None else set()
    sizes: dict[Path, tuple[int, int]] = {}
    per_item: dict[str, tuple[int, int]] = {}
    for item in dataset:
        path = Path(item.image)
        if path not in sizes:
            with Image.open(path) as img:  # reads the header only
                sizes[path] = img.size
        per_item[item.id] = (prompt_tokens(item.prompt), image_tokens(rule, *sizes[path]))
    costs = []
    for spec in specs:
        todo = [i for i in per_item if (spec.key, i) not in done]
        calls = len(todo) * spec.n_samples
        costs.append(RunCost(key=spec.key, sigma=spec.sigma, n_samples=spec.n_samples, items=len(per_item),
                             todo=len(todo), calls=calls,
                             prompt_tokens=spec.n_samples * sum(per_item[i][0] for i in todo),
                             image_tokens=spec.n_samples * sum(per_item[i][1] for i in todo),
                             max_output_tokens=calls * max_output_tokens, at_most=bool(spec.adaptive)))
    return costs


def cost_table(costs: Sequence[RunCost], *, rule: Any, model: str) -> str:
    """The estimate as a Markdown table with a total row."""
    lines = [f"dry run: {model}, image tokens by the {rule!r} rule (estimates; see smoothguard.eval.cost)", "",
             "| run | items to answer | model calls | prompt tokens | image tokens | output tokens at most |",
             "|---|---|---|---|---|---|"]
    for c in costs:
        bound = "≤ " if c.at_most else ""
        lines.append(f"| {c.key} | {c.todo} of {c.items} | {bound}{c.calls:,} | {bound}{c.prompt_tokens:,} | "
                     f"{bound}{c.image_tokens:,} | {c.max_output_tokens:,} |")
    lines.append(f"| total | {sum(c.todo for c in costs)} | {sum(c.calls for c in costs):,} | "
                 f"{sum(c.prompt_tokens for c in costs):,} | {sum(c.image_tokens for c in costs):,} | "
                 f"{sum(c.max_output_tokens for c in costs):,} |")
    return "\n".join(lines) + "\n"


def _logged(path: Path, retry_errors: bool) -> set[tuple[str, str]]:
    """(run, id) of the answers already logged (a torn last line is skipped, nothing written)."""
    if not path.is_file():
        return set()
    keys = set()
    for line in path.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (isinstance(record, dict) and "run" in record and "id" in record
                and not (retry_errors and record.get("error") is not None)):
            keys.add((record["run"], record["id"]))
    return keys
