"""Readers for the public benchmark formats: POPE, MM-SafetyBench and LLaVA-Bench in-the-Wild.

Every reader returns a :class:`Dataset` of :class:`EvalItem` with a unique, stable ``id``; the harness scores
by that id, never by position. A missing file, field or image raises :class:`DatasetError` naming it.

POPE (``read_pope``)
    ``coco_pope_{adversarial,popular,random}.json`` (JSON lines despite the extension: ``question_id``,
    ``image``, ``text``, ``label`` yes/no) plus an image folder (``images/`` by default, or COCO ``val2014``).
    ``question_id`` restarts at 1 in every split, so the id is ``"{split}/{question_id}"``. A single
    ``.jsonl`` file with the same fields (``category`` optional) is read too.
MM-SafetyBench (``read_mmsafety``)
    ``processed_questions/{scenario}.json``: ``{"0": {"Question", "Rephrased Question",
    "Rephrased Question(SD)", "Key Phrase", ...}, ...}`` and ``imgs/{scenario}/{SD,SD_TYPO,TYPO}/{qid}.jpg``
    (also under ``data/``). The prompt is MM-SafetyBench's: ``Rephrased Question(SD)`` with SD images,
    ``Rephrased Question`` with TYPO and SD_TYPO images, the plain ``Question`` with one universal image
    (an adversarial image shared by every question). Ids are ``"{scenario}/{qid}"``.
LLaVA-Bench in-the-Wild (``read_llavabench``)
    ``questions.jsonl`` (``question_id``, ``image``, ``text``, ``category``), ``context.jsonl`` (``image``,
    ``caption``), ``answers_gpt4.jsonl`` (``question_id``, ``text``: the reference answers) and ``images/``.
    References are joined by ``question_id`` and captions by ``image`` (LLaVA's own script zips by order).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smoothguard.eval.errors import DatasetError

__all__ = [
    "BENCHMARKS",
    "MMSAFETY_IMAGE_TYPES",
    "MMSAFETY_SCENARIOS",
    "POPE_SPLITS",
    "Dataset",
    "EvalItem",
    "read_dataset",
    "read_llavabench",
    "read_mmsafety",
    "read_pope",
]

BENCHMARKS: tuple[str, ...] = ("pope", "mmsafety", "llavabench")
POPE_SPLITS: tuple[str, ...] = ("adversarial", "popular", "random")
#: MM-SafetyBench's 13 scenarios, spelled as its files are (``Illegal_Activitiy`` sic).
MMSAFETY_SCENARIOS: tuple[str, ...] = (
    "01-Illegal_Activitiy", "02-HateSpeech", "03-Malware_Generation", "04-Physical_Harm", "05-EconomicHarm",
    "06-Fraud", "07-Sex", "08-Political_Lobbying", "09-Privacy_Violence", "10-Legal_Opinion",
    "11-Financial_Advice", "12-Health_Consultation", "13-Gov_Decision",
)
MMSAFETY_IMAGE_TYPES: tuple[str, ...] = ("SD", "SD_TYPO", "TYPO")
_MMSAFETY_PROMPT_FIELD = {"SD": "Rephrased Question(SD)", "SD_TYPO": "Rephrased Question",
                          "TYPO": "Rephrased Question", "universal": "Question"}
_IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class EvalItem:
    """One question of a benchmark.

    id: unique within the dataset, stable across runs (the key answers are stored and scored by).
    prompt: the exact text sent to the model, the same for the undefended and every defended run.
    image: path of the image file.
    category: POPE split, MM-SafetyBench scenario or LLaVA-Bench category.
    label: POPE ground truth, ``"yes"`` or ``"no"``.
    reference: LLaVA-Bench reference answer (GPT-4's).
    context: LLaVA-Bench image caption, shown to the judge.
    question: what a safety judge sees as the user's request (MM-SafetyBench's plain ``Question``);
        None means ``prompt``.
    meta: the source record's other fields (``question_id``, ``Key Phrase``, source file, ...).
    """

    id: str
    prompt: str
    image: Path
    category: str | None = None
    label: str | None = None
    reference: str | None = None
    context: str | None = None
    question: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def judge_question(self) -> str:
        """The question a judge should see."""
        return self.question if self.question is not None else self.prompt


@dataclass(frozen=True)
class Dataset:
    """The items of one benchmark, in file order, with unique ids. ``root``: where it was read from."""

    benchmark: str
    root: Path
    items: tuple[EvalItem, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        duplicates = []
        for item in self.items:
            if item.id in seen:
                duplicates.append(item.id)
            seen.add(item.id)
        if duplicates:
            raise DatasetError(f"{self.root}: duplicate item ids {duplicates[:5]}; every question must have its "
                               "own id (read one POPE split file per directory, or fix the question ids)")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    def __getitem__(self, index: int) -> EvalItem:
        return self.items[index]

    @property
    def ids(self) -> list[str]:
        """Item ids, in order."""
        return [item.id for item in self.items]

    def by_id(self) -> dict[str, EvalItem]:
        """``{id: item}``."""
        return {item.id: item for item in self.items}

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` items (all when ``n`` is None), a deterministic subset."""
        if n is None:
            return self
        if n < 1:
            raise ValueError(f"limit must be >= 1, got {n}")
        return replace(self, items=self.items[:n])


# -- POPE -------------------------------------------------------------------------------------------------


def read_pope(path: str | Path, *, images: str | Path | None = None, splits: Sequence[str] | None = None,
              prompt_suffix: str = "") -> Dataset:
    """Read POPE label files (a directory of ``*_pope_{split}.json`` or one ``.jsonl``) and check the images.

    images: the image folder (default ``images/`` or ``val2014/`` next to the files). splits: keep only these.
    prompt_suffix: appended to every question, e.g. LLaVA's ``"\\nAnswer the question using a single word or
    phrase."`` (the default adds nothing).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"POPE data not found: {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and "_pope_" in p.stem
                       and p.suffix in (".json", ".jsonl"))
        if not files:
            raise DatasetError(f"no POPE label files in {path}: expected coco_pope_{{adversarial,popular,random}}"
                               ".json (JSON lines with question_id, image, text, label), or pass one .jsonl file")
        base = path
    else:
        files, base = [path], path.parent
    image_dir = _image_dir(base, images, ("images", "val2014"))
    items = []
    found: set[str] = set()
    for file in files:
        file_split = file.stem.split("_pope_", 1)[1] if "_pope_" in file.stem else None
        for lineno, record in _records(file, ("question_id", "image", "text", "label"), "POPE"):
            split = file_split or _opt_str(record.get("category"))
            found.add(split or "")
            if splits is not None and split not in splits:
                continue
            label = str(record["label"]).strip().lower()
            if label not in ("yes", "no"):
                raise DatasetError(f"{file}:{lineno}: label must be 'yes' or 'no', got {record['label']!r}")
            qid = record["question_id"]
            items.append(EvalItem(
                id=f"{split}/{qid}" if split else str(qid), prompt=str(record["text"]) + prompt_suffix,
                image=image_dir / str(record["image"]), category=split, label=label,
                meta={"question_id": qid, "file": file.name}))
    if splits is not None:
        unknown = sorted(set(splits) - found)
        if unknown:
            raise DatasetError(f"POPE splits {unknown} not in {path}; found {sorted(s for s in found if s)}")
    return _checked(Dataset("pope", path, tuple(items), {"splits": list(splits or []), "prompt_suffix":
                                                         prompt_suffix, "images": str(image_dir.resolve())}))


# -- MM-SafetyBench ---------------------------------------------------------------------------------------


def read_mmsafety(path: str | Path, *, image_type: str = "SD_TYPO", scenarios: Sequence[str] | None = None,
                  universal_image: str | Path | None = None) -> Dataset:
    """Read MM-SafetyBench: the questions of each scenario with their ``image_type`` images.

    image_type: ``"SD"``, ``"SD_TYPO"`` (default) or ``"TYPO"``. universal_image: one image file used for
    every question, with the plain ``Question`` as prompt (the universal adversarial-image setting);
    ``image_type`` is then ignored. scenarios: names as in :data:`MMSAFETY_SCENARIOS` (default: all found).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"MM-SafetyBench data not found: {path} does not exist")
    qdir = _first_dir(path, ("processed_questions", "data/processed_questions"))
    if qdir is None:
        raise DatasetError(f"{path} has no processed_questions/ folder (MM-SafetyBench keeps one "
                           "{scenario}.json per scenario there)")
    mode = "universal" if universal_image is not None else image_type
    if mode not in _MMSAFETY_PROMPT_FIELD:
        raise DatasetError(f"image_type must be one of {MMSAFETY_IMAGE_TYPES}, got {image_type!r}")
    if universal_image is not None:
        universal = Path(universal_image)
        if not universal.is_file():
            raise DatasetError(f"universal image not found: {universal}")
        img_root = None
    else:
        img_root = _first_dir(path, ("imgs", "data/imgs"))
        if img_root is None:
            raise DatasetError(f"{path} has no imgs/ folder (MM-SafetyBench keeps imgs/{{scenario}}/{image_type}/"
                               "{id}.jpg)")
    names = list(scenarios) if scenarios is not None else sorted(p.stem for p in qdir.glob("*.json"))
    if not names:
        raise DatasetError(f"no scenario files ({{scenario}}.json) in {qdir}")
    prompt_field = _MMSAFETY_PROMPT_FIELD[mode]
    required = ("Question", prompt_field)
    items = []
    for scenario in names:
        file = qdir / f"{scenario}.json"
        if not file.is_file():
            raise DatasetError(f"MM-SafetyBench scenario file not found: {file}")
        data = _load_json(file)
        if not isinstance(data, dict):
            raise DatasetError(f"{file}: expected a JSON object {{question id: item}}, got {type(data).__name__}")
        for qid, record in data.items():
            if not isinstance(record, dict):
                raise DatasetError(f"{file}: item {qid!r} is not an object")
            missing = [f for f in required if f not in record]
            if missing:
                raise DatasetError(f"{file}: item {qid!r} lacks field(s) {missing} (needed for {mode} images)")
            image = universal if img_root is None else _find_image(img_root / scenario / image_type, str(qid))
            items.append(EvalItem(
                id=f"{scenario}/{qid}", prompt=str(record[prompt_field]), image=image, category=scenario,
                question=str(record["Question"]),
                meta={"question_id": qid, "key_phrase": record.get("Key Phrase"), "image_type": mode}))
    return _checked(Dataset("mmsafety", path, tuple(items),
                            {"image_type": mode, "scenarios": names,
                             "universal_image": str(Path(universal_image).resolve()) if universal_image else None}))


# -- LLaVA-Bench in-the-Wild ------------------------------------------------------------------------------


def read_llavabench(path: str | Path, *, images: str | Path | None = None) -> Dataset:
    """Read LLaVA-Bench in-the-Wild: questions, captions (by image) and GPT-4 references (by question_id)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"LLaVA-Bench data not found: {path} is not a directory")
    image_dir = _image_dir(path, images, ("images",))
    questions = _records(path / "questions.jsonl", ("question_id", "image", "text", "category"), "LLaVA-Bench")
    contexts = _records(path / "context.jsonl", ("image", "caption"), "LLaVA-Bench")
    answers = _records(path / "answers_gpt4.jsonl", ("question_id", "text"), "LLaVA-Bench")
    captions = {str(r["image"]): str(r["caption"]) for _, r in contexts}
    references = {str(r["question_id"]): str(r["text"]) for _, r in answers}
    no_ref = [str(r["question_id"]) for _, r in questions if str(r["question_id"]) not in references]
    if no_ref:
        raise DatasetError(f"{path / 'answers_gpt4.jsonl'} has no reference answer for question_id(s) {no_ref[:5]}")
    no_caption = sorted({str(r["image"]) for _, r in questions if str(r["image"]) not in captions})
    if no_caption:
        raise DatasetError(f"{path / 'context.jsonl'} has no caption for image(s) {no_caption[:5]}")
    items = tuple(
        EvalItem(id=str(r["question_id"]), prompt=str(r["text"]), image=image_dir / str(r["image"]),
                 category=str(r["category"]), reference=references[str(r["question_id"])],
                 context=captions[str(r["image"])], meta={"question_id": r["question_id"]})
        for _, r in questions)
    return _checked(Dataset("llavabench", path, items, {"images": str(image_dir.resolve())}))


def read_dataset(benchmark: str, path: str | Path, **options: Any) -> Dataset:
    """``read_pope`` / ``read_mmsafety`` / ``read_llavabench`` by name (one of :data:`BENCHMARKS`)."""
    readers = {"pope": read_pope, "mmsafety": read_mmsafety, "llavabench": read_llavabench}
    if benchmark not in readers:
        raise DatasetError(f"unknown benchmark {benchmark!r}; choose one of {BENCHMARKS}")
    return readers[benchmark](path, **options)


# -- helpers ----------------------------------------------------------------------------------------------


def _load_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{file}: not valid JSON ({exc})") from exc


def _records(file: Path, required: Sequence[str], what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSON-lines file (a JSON array is accepted too), each with ``required``."""
    if not file.is_file():
        raise DatasetError(f"{what} file not found: {file}")
    text = file.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = _load_json(file)
        rows = list(enumerate(data, start=1))
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{file}:{lineno}: not valid JSON ({exc})") from exc
    for lineno, record in rows:
        if not isinstance(record, dict):
            raise DatasetError(f"{file}:{lineno}: expected a JSON object, got {type(record).__name__}")
        missing = [f for f in required if f not in record]
        if missing:
            raise DatasetError(f"{file}:{lineno}: missing field(s) {missing} ({what} records need "
                               f"{', '.join(required)})")
    return rows


def _image_dir(base: Path, given: str | Path | None, defaults: Sequence[str]) -> Path:
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise DatasetError(f"image folder not found: {folder}")
        return folder
    return _first_dir(base, defaults) or base


def _first_dir(base: Path, names: Sequence[str]) -> Path | None:
    return next((base / n for n in names if (base / n).is_dir()), None)


def _find_image(folder: Path, stem: str) -> Path:
    for ext in _IMAGE_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return folder / f"{stem}.jpg"  # reported by _checked


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _checked(dataset: Dataset) -> Dataset:
    """The dataset, once every image file exists and it is not empty."""
    if not dataset.items:
        raise DatasetError(f"{dataset.root}: no {dataset.benchmark} questions found")
    missing = [str(item.image) for item in dataset.items if not item.image.is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{len(missing)} image file(s) of {dataset.benchmark} missing: "
                           f"{', '.join(missing[:5])}{more}")
    return dataset
