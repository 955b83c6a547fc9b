"""The resumable evaluation runner: answer every item once per run, score by id, write the report.

A *run* is one setting (:class:`RunSpec`): ``sigma=0`` is the undefended model (one plain
``backend.generate(prompt, [[image]])`` call per item, no guard), ``sigma>0`` the model behind
:class:`~smoothguard.SmoothGuard` with ``n_samples`` candidates. Every run sends the same prompt and image.

Output folder (``out``):

- ``answers.jsonl``: one record per (run, item), appended and flushed to disk (``fsync``) as each answer
  arrives. Restarting skips the (run, id) pairs already there, so a killed run resumes where it stopped with
  nothing lost or duplicated; a last line cut by the kill is dropped and its item asked again.
- ``judgements.jsonl``: the same, for verdicts of LLM judges (keyword and overlap judges are recomputed).
- ``manifest.json``: benchmark, model, data and options; a restart with other ones is refused.
- ``summary.json``, ``summary.md``, ``sweep.png``: see :mod:`smoothguard.eval.report`.

An endpoint backend (:class:`~smoothguard.eval.endpoint.EndpointModel`, ``--model openai:MODEL``) has several
items in flight at once, its calls bounded by its ``concurrency``; the guarded items go through the core's
:class:`~smoothguard.fanout.FanOut`. Their records also count HTTP ``calls``, ``retries`` and ``failed_calls``.

Noise is seeded per item from ``(seed, item id)``, so an item gets the same noise and answer whether it runs
first, last, or after a restart.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoothguard.eval.errors import EvalError
from smoothguard.eval.metrics import BENIGN_BENCHMARKS, refusals
from smoothguard.eval.readers import Dataset, EvalItem

__all__ = ["AnswerLog", "EvalRunner", "RunSpec", "is_endpoint", "item_seed", "read_answers", "run_eval",
           "sweep_specs"]

ImageTransform = Callable[[EvalItem, Any], Any]
_FAIL_FAST = 5  # a run whose first this-many items all fail is stopped: the setup is broken


@dataclass(frozen=True)
class RunSpec:
    """One evaluation setting.

    sigma: guard noise std (GuardConfig units); 0 means no guard. n_samples: candidates (1 when sigma is 0).
    adaptive: the guard's early-stopping mode. tag: names a variant of the inputs (e.g. an attack), so its
    answers are kept apart.
    """

    sigma: float
    n_samples: int = 11
    adaptive: bool = False
    tag: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma, int | float) and math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma!r}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.sigma == 0:
            object.__setattr__(self, "n_samples", 1)
            object.__setattr__(self, "adaptive", False)
        object.__setattr__(self, "sigma", float(self.sigma))

    @property
    def defended(self) -> bool:
        """True when the guard runs (sigma > 0)."""
        return self.sigma > 0

    @property
    def key(self) -> str:
        """The run's name in the answer log, e.g. ``"sigma=0.1,n=11"``."""
        key = f"sigma={self.sigma:g},n={self.n_samples}" if self.defended else "sigma=0"
        if self.adaptive:
            key += ",adaptive"
        return f"{key},{self.tag}" if self.tag else key

    def to_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "n_samples": self.n_samples, "adaptive": self.adaptive, "tag": self.tag,
                "key": self.key}


def sweep_specs(sigmas: Iterable[float], n_samples: int = 11, *, adaptive: bool = False,
                tag: str = "") -> list[RunSpec]:
    """One :class:`RunSpec` per sigma (0 gives the undefended run), duplicates dropped, order kept."""
    specs: list[RunSpec] = []
    for sigma in sigmas:
        spec = RunSpec(sigma, n_samples, adaptive, tag)
        if spec not in specs:
            specs.append(spec)
    return specs


def item_seed(seed: int, item_id: str) -> int:
    """The guard seed of one item: 32 bits of SHA-256 of ``"{seed}:{item_id}"`` (order independent)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "big")


class AnswerLog:
    """An append-only JSON-lines file of records keyed by ``key_fields``; each append reaches the disk.

    Opening it recovers from a kill: a last line without its newline is cut off (that record is redone).
    When a key appears twice (a failed answer retried), the later record wins.
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str] = ("run", "id")) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.records: dict[tuple, dict[str, Any]] = {}
        self._file: Any = None
        self._recover()

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:  # a line cut by a kill: drop it
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for lineno, line in enumerate(data[:end].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = self.key(record)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise EvalError(f"{self.path}:{lineno}: unreadable record ({exc}); fix or delete that line, "
                                "or use a fresh --out folder") from exc
            self.records[key] = record

    def key(self, record: Mapping[str, Any]) -> tuple:
        """The record's key."""
        return tuple(record[f] for f in self.key_fields)

    def get(self, *key: Any) -> dict[str, Any] | None:
        """The record with this key, or None."""
        return self.records.get(tuple(key))

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line, flush and fsync it."""
        line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open across appends)
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[self.key(record)] = record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AnswerLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EvalRunner:
    """Runs :class:`RunSpec` settings of one benchmark against one backend into ``out``.

    backend: any object with the Backend protocol's ``generate(prompt, variants)``. dataset: from a reader.
    model_name: recorded in the manifest and summary. judge: a safety judge (mmsafety; default
    :class:`~smoothguard.eval.judges.KeywordJudge`) or a review judge (llavabench; default none: answers
    only). guard_settings: further :class:`~smoothguard.GuardConfig` settings (sigma, n_samples, adaptive
    and seed are set per run and item). seed: base of the per-item noise seeds. progress: tqdm bars on
    stderr. retry_errors: ask again the items whose generation failed in an earlier attempt.
    image_transform: ``f(item, Media) -> Media`` applied before the model sees the image (e.g. an attack);
    give such runs a ``tag``. options: extra manifest entries (data-reading options). benign: every input is
    benign, so every refusal is an over-refusal (default: POPE and LLaVA-Bench are, MM-SafetyBench is not; True
    for a benign control set in MM-SafetyBench's format).
    """

    def __init__(self, backend: Any, dataset: Dataset, out: str | Path, *, model_name: str | None = None,
                 judge: Any = None, guard_settings: Mapping[str, Any] | None = None, seed: int = 0,
                 progress: bool = True, retry_errors: bool = False, image_transform: ImageTransform | None = None,
                 options: Mapping[str, Any] | None = None, benign: bool | None = None) -> None:
        from smoothguard.config import GuardConfig

        self.backend = backend
        self.dataset = dataset
        self.out = Path(out)
        self.model_name = model_name or getattr(backend, "name", None) or type(backend).__name__
        if judge is None and dataset.benchmark == "mmsafety":
            from smoothguard.eval.judges import KeywordJudge

            judge = KeywordJudge()
        self.judge = judge
        self.base_config = GuardConfig.from_kwargs(**dict(guard_settings or {}))
        self.seed = seed
        self.progress = progress
        self.retry_errors = retry_errors
        self.image_transform = image_transform
        self.options = dict(options or {})
        self.benign = dataset.benchmark in BENIGN_BENCHMARKS if benign is None else bool(benign)

    # -- the whole evaluation -------------------------------------------------------------------------------

    def run(self, specs: Sequence[RunSpec]) -> dict[str, Any]:
        """Answer, score and report every spec; returns the summary (also written to ``out/summary.json``)."""
        from smoothguard.eval.report import write_report

        if not specs:
            raise ValueError("give at least one RunSpec (sigma 0 is the undefended run)")
        if self.image_transform is not None and any(not spec.tag for spec in specs):
            raise ValueError("with image_transform, give every RunSpec a tag (e.g. the attack's name), so the "
                             "transformed answers are kept apart from the clean ones")
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_manifest()
        with AnswerLog(self.out / "answers.jsonl") as log:
            for spec in specs:
                self.answer(spec, log)
            runs = [self.score(spec, log) for spec in specs]
        summary = {"benchmark": self.dataset.benchmark, "model": self.model_name, "data": str(self.dataset.root),
                   "n_items": len(self.dataset), "judge": getattr(self.judge, "name", None), "seed": self.seed,
                   "guard": _guard_summary(self.base_config), "runs": runs}
        if is_endpoint(self.backend):  # where it ran and what this process sent (earlier sessions: see cost)
            stats = getattr(self.backend, "stats", None)
            summary["endpoint"] = {"base_url": getattr(self.backend, "base_url", None),
                                   "concurrency": self.backend.concurrency, "image_resize": self.backend.resize_rule,
                                   "this_session": stats.to_dict() if stats is not None else None}
        write_report(summary, self.out)
        return summary

    def _manifest(self) -> dict[str, Any]:
        """What answers depend on. Options that only select items (splits, scenarios, limits) are left out."""
        data_options = {k: v for k, v in self.dataset.options.items() if k not in ("splits", "scenarios")}
        return {"benchmark": self.dataset.benchmark, "model": self.model_name,
                "data": str(self.dataset.root.resolve()), "data_options": data_options, "seed": self.seed,
                "guard": _guard_summary(self.base_config), "options": self.options}

    def check_out(self) -> None:
        """Raise :class:`EvalError` now if ``out`` holds another evaluation (before a long model load)."""
        self._check_manifest(write=False)

    def _check_manifest(self, write: bool = True) -> None:
        path = self.out / "manifest.json"
        manifest = json.loads(json.dumps(self._manifest()))
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path} is unreadable ({exc}); delete it or use a fresh --out folder") from exc
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if changed:
                detail = "; ".join(f"{k}: {old.get(k)!r} -> {manifest.get(k)!r}" for k in changed)
                raise EvalError(f"{self.out} holds answers of another evaluation ({detail}); resuming would mix "
                                "them. Use a fresh --out folder, or the same settings as before.")
            return
        if write:  # atomically: a kill while writing must not leave a torn manifest that blocks the resume
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)

    # -- answering ------------------------------------------------------------------------------------------

    def answer(self, spec: RunSpec, log: AnswerLog) -> None:
        """Ask every item of the dataset not yet answered in ``spec``'s run, logging each answer as it comes.

        The progress bar counts model calls (calls/s and an ETA; guarded items count ``n_samples`` until they
        say how many they used). An endpoint backend (:class:`~smoothguard.eval.endpoint.EndpointModel`) gets
        several items in flight at once, its calls bounded by its ``concurrency``; records are logged in the
        order items finish.
        """
        todo = [item for item in self.dataset if not self._done(log.get(spec.key, item.id))]
        if not todo:
            return
        per_item = spec.n_samples
        bar = _progress(total=len(self.dataset) * per_item, initial=(len(self.dataset) - len(todo)) * per_item,
                        desc=f"{self.dataset.benchmark} {spec.key}", disable=not self.progress)
        failures: list[str] = []
        finished = [0]

        def logged(record: dict[str, Any]) -> None:
            log.append(record)
            used = per_item if record["error"] is not None else int(record.get("n_used") or per_item)
            if used < per_item:  # adaptive early stop: fewer calls than the bar planned
                bar.total -= per_item - used
            bar.update(min(used, per_item))
            finished[0] += 1
            if record["error"] is not None:
                failures.append(record["error"])
                if len(failures) == _FAIL_FAST == finished[0]:
                    raise EvalError(f"the first {_FAIL_FAST} items of run {spec.key} all failed; the model "
                                    f"or data is broken. First error: {failures[0]}")

        try:
            if is_endpoint(self.backend):
                import asyncio

                asyncio.run(self._answer_concurrently(spec, todo, logged))
            else:
                for item in todo:
                    logged(self.answer_one(spec, item))
        finally:
            bar.close()

    async def _answer_concurrently(self, spec: RunSpec, todo: Sequence[EvalItem],
                                   logged: Callable[[dict[str, Any]], None]) -> None:
        """Items in flight together: enough to keep ``concurrency`` calls busy, twice over (so the next item's
        noise and encoding overlap the calls of the last), each logged as soon as it is answered."""
        import asyncio

        backend = self.backend
        in_flight = asyncio.Semaphore(max(2, 2 * math.ceil(backend.concurrency / spec.n_samples)))

        async def one(item: EvalItem) -> None:
            async with in_flight:
                record = await self.aanswer_one(spec, item)
            logged(record)

        async with backend.session():
            try:
                async with asyncio.TaskGroup() as tasks:
                    for item in todo:
                        tasks.create_task(one(item))
            except* EvalError as group:  # fail fast: the first such error, not the group
                raise group.exceptions[0] from None

    def _done(self, record: Mapping[str, Any] | None) -> bool:
        return record is not None and not (self.retry_errors and record.get("error") is not None)

    def answer_one(self, spec: RunSpec, item: EvalItem) -> dict[str, Any]:
        """The log record of one item in one run (its generation errors are recorded, not raised)."""
        from smoothguard import SmoothGuard

        record, start = self._new_record(spec, item)
        try:
            image = self._image(item)
            if not spec.defended:
                record["n_used"] = 1
                record["answer"] = _one_answer(self.backend.generate(item.prompt, [[image]]))
            else:
                result = SmoothGuard(self._config(spec, record["seed"])).ask(self.backend, item.prompt,
                                                                             images=[image])
                _store_result(record, result)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one item's failure is recorded and counted apart, the run goes on
            _store_error(record, exc, spec)
        record["seconds"] = time.perf_counter() - start
        return record

    async def aanswer_one(self, spec: RunSpec, item: EvalItem) -> dict[str, Any]:
        """:meth:`answer_one` against an endpoint backend: the undefended run is one call; the guarded run goes
        through the core's fan-out (:class:`~smoothguard.fanout.FanOut`: each noisy copy drawn at the endpoint's
        ``image_resize`` size and encoded in a worker thread, sent as soon as it is ready). The record also counts
        the item's HTTP ``calls``, ``retries`` and ``failed_calls`` (calls that failed after their retries)."""
        import asyncio

        from smoothguard import SmoothGuard
        from smoothguard.eval.endpoint import item_counter
        from smoothguard.fanout import FanOut

        record, start = self._new_record(spec, item)
        counter = item_counter()
        try:
            image = await asyncio.to_thread(self._image, item)
            if not spec.defended:
                record["n_used"] = 1
                record["answer"] = _one_answer(await self.backend.agenerate(item.prompt, [[image]]))
            else:
                prompt, backend = item.prompt, self.backend
                fan = FanOut(SmoothGuard(self._config(spec, record["seed"])),
                             prepare=lambda variant: backend.payload(prompt, variant),
                             acall=lambda index, payload: backend.post(payload))
                _store_result(record, await fan.arun([image], auto_resize=backend.resize_rule))
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise
        except Exception as exc:  # one item's failure is recorded and counted apart, the run goes on
            _store_error(record, exc, spec)
        record.update(calls=counter["calls"], retries=counter["retries"], failed_calls=counter["failed_calls"],
                      seconds=time.perf_counter() - start)
        return record

    def _new_record(self, spec: RunSpec, item: EvalItem) -> tuple[dict[str, Any], float]:
        seed = item_seed(self.seed, item.id)
        setting = {k: v for k, v in spec.to_dict().items() if k != "key"}
        record: dict[str, Any] = {"run": spec.key, "id": item.id, **setting, "prompt": item.prompt, "seed": seed,
                                  "answer": None, "error": None, "n_used": 0, "agreement": None, "flagged": None,
                                  "candidates": None}
        return record, time.perf_counter()

    def _image(self, item: EvalItem) -> Any:
        from smoothguard import Media

        image = Media.image(item.image)
        if self.image_transform is not None:
            image = Media.image(self.image_transform(item, image))
        return image

    def _config(self, spec: RunSpec, seed: int) -> Any:
        return self.base_config.replace(sigma=spec.sigma, n_samples=spec.n_samples, adaptive=spec.adaptive,
                                        seed=seed)

    # -- scoring --------------------------------------------------------------------------------------------

    def score(self, spec: RunSpec, log: AnswerLog) -> dict[str, Any]:
        """The summary entry of one run: metrics by id, cost and agreement."""
        records = {item.id: log.get(spec.key, item.id) for item in self.dataset}
        done = {i: r for i, r in records.items() if r is not None}
        answers = {i: r["answer"] if r["error"] is None else None for i, r in done.items()}
        items = self.dataset.by_id()
        categories = {i: items[i].category for i in items}
        benchmark = self.dataset.benchmark
        if benchmark == "pope":
            from smoothguard.eval.metrics import pope_metrics

            metrics = pope_metrics(answers, {i: items[i].label for i in items}, categories)
        elif benchmark == "mmsafety":
            metrics = self._score_safety(spec, answers, categories)
        else:
            metrics = self._score_reviews(spec, answers, categories)
        metrics.setdefault("failed", sum(a is None for a in answers.values()))
        metrics["missing"] = len(records) - len(done)
        answered = [r for r in done.values() if r["error"] is None]
        agreements = [r["agreement"] for r in answered if r.get("agreement") is not None]
        metrics.update(refusals(answers, benign=self.benign))
        cost = {"model_calls": sum(int(r.get("n_used") or 0) for r in done.values()),
                "calls_per_item": _mean([r.get("n_used") or 0 for r in done.values()]),
                "seconds_per_item": _mean([r.get("seconds", 0.0) for r in done.values()])}
        if any("calls" in r for r in done.values()):  # an endpoint run: its HTTP calls, retries and failures
            cost.update({name: sum(int(r.get(name) or 0) for r in done.values())
                         for name in ("calls", "retries", "failed_calls")})
        stability = {"mean_agreement": _mean(agreements),
                     "flagged_rate": _mean([bool(r.get("flagged")) for r in answered]) if agreements else None}
        return {**spec.to_dict(), "metrics": metrics, "cost": cost, "stability": stability}

    def _score_safety(self, spec: RunSpec, answers: Mapping[str, str | None],
                      categories: Mapping[str, str | None]) -> dict[str, Any]:
        from smoothguard.eval.metrics import attack_success_rate

        answered = {i: a for i, a in answers.items() if a is not None}
        items = self.dataset.by_id()
        verdicts = self._judged(spec, answered, lambda ids: self.judge.judge_many(
            [(items[i].judge_question, answered[i]) for i in ids]), lambda v: {"verdict": v.verdict})
        metrics = attack_success_rate({i: v["verdict"] for i, v in verdicts.items()},
                                      failed=len(answers) - len(answered), categories=categories)
        metrics["judge_errors"] = sum(bool(v.get("error")) for v in verdicts.values())
        return metrics

    def _score_reviews(self, spec: RunSpec, answers: Mapping[str, str | None],
                       categories: Mapping[str, str | None]) -> dict[str, Any]:
        from smoothguard.eval.metrics import relative_score

        answered = {i: a for i, a in answers.items() if a is not None}
        base = {"n": len(self.dataset), "answered": len(answered), "failed": len(answers) - len(answered)}
        if self.judge is None:
            return {**base, "relative_score": None, "note": "no judge given: answers collected, not scored"}
        items = self.dataset.by_id()
        reviews = self._judged(spec, answered, lambda ids: self.judge.review_many(
            [(items[i].prompt, items[i].context or "", items[i].reference or "", answered[i]) for i in ids]),
            lambda r: {"scores": list(r.scores) if r.scores is not None else None})
        metrics = relative_score({i: tuple(r["scores"]) if r["scores"] is not None else None
                                  for i, r in reviews.items()}, categories)
        metrics.update(answered=base["answered"], failed=base["failed"],
                       judge_errors=sum(bool(r.get("error")) for r in reviews.values()))
        return metrics

    def _judged(self, spec: RunSpec, answered: Mapping[str, str], call: Callable[[list[str]], list[Any]],
                fields: Callable[[Any], dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """``{id: judgement fields}``; cacheable judges' judgements are read from and added to judgements.jsonl."""
        name = self.judge.name
        if not getattr(self.judge, "cacheable", False):
            ids = list(answered)
            return {i: {**fields(j), "error": j.error} for i, j in zip(ids, call(ids) if ids else [], strict=True)}
        out: dict[str, dict[str, Any]] = {}
        with AnswerLog(self.out / "judgements.jsonl", ("judge", "run", "id", "answer_sha")) as cache:
            todo = []
            for item_id, answer in answered.items():
                cached = cache.get(name, spec.key, item_id, _sha(answer))
                if cached is None:
                    todo.append(item_id)
                else:
                    out[item_id] = cached
            bar = _progress("item", total=len(todo), desc=f"judging {spec.key}", disable=not self.progress or not todo)
            for start in range(0, len(todo), 32):  # in chunks, so a killed judging run keeps its progress
                chunk = todo[start:start + 32]
                for item_id, judgement in zip(chunk, call(chunk), strict=True):
                    entry = {**fields(judgement), "raw": judgement.raw, "error": judgement.error}
                    if not judgement.error:  # a failed call is not cached: the next run retries it
                        cache.append({"judge": name, "run": spec.key, "id": item_id,
                                      "answer_sha": _sha(answered[item_id]), **entry})
                    out[item_id] = entry
                bar.update(len(chunk))
            bar.close()
        return out


def run_eval(backend: Any, dataset: Dataset, out: str | Path, *, sigmas: Iterable[float] = (0.0, 0.1, 0.15, 0.2),
             n_samples: int = 11, adaptive: bool = False, limit: int | None = None, **runner_options: Any
             ) -> dict[str, Any]:
    """Evaluate ``backend`` on ``dataset`` (its first ``limit`` items) at each sigma; returns the summary.

    sigma 0 is the undefended model. ``runner_options`` go to :class:`EvalRunner` (model_name, judge,
    guard_settings, seed, progress, retry_errors, image_transform, options).
    """
    runner = EvalRunner(backend, dataset.head(limit), out, **runner_options)
    return runner.run(sweep_specs(sigmas, n_samples, adaptive=adaptive))


def read_answers(out: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{run key: {item id: record}}`` from ``out/answers.jsonl`` (e.g. agreements for a detection ROC)."""
    path = Path(out) / "answers.jsonl"
    if not path.is_file():
        raise EvalError(f"no answers at {path}")
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for (run, item_id), record in AnswerLog(path).records.items():
        runs.setdefault(run, {})[item_id] = record
    return runs


def _progress(unit: str = "call", **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(unit=unit, dynamic_ncols=True, **kwargs)


def is_endpoint(backend: Any) -> bool:
    """Whether ``backend`` answers over HTTP with its own concurrency (an EndpointModel or alike)."""
    return all(hasattr(backend, name) for name in ("agenerate", "session", "concurrency", "resize_rule"))


def _one_answer(outputs: Any) -> str:
    """The one answer of an undefended call, or its exception raised."""
    if isinstance(outputs, str) or len(outputs) != 1:
        raise EvalError(f"generate returned {outputs!r} for one variant; it must return a list of one")
    if isinstance(outputs[0], BaseException):
        raise outputs[0]
    return str(outputs[0]).strip()


def _store_result(record: dict[str, Any], result: Any) -> None:
    record.update(answer=result.answer, n_used=result.n_used, agreement=result.agreement, flagged=result.flagged,
                  refused=result.refused, candidates=[s.answer for s in result.samples])


def _store_error(record: dict[str, Any], exc: BaseException, spec: RunSpec) -> None:
    record["error"] = f"{type(exc).__name__}: {exc}"
    if getattr(exc, "answers", None) is not None:  # GenerationError: what did arrive
        record["candidates"] = [exc.answers.get(i) for i in range(spec.n_samples)]


def _guard_summary(config: Any) -> dict[str, Any]:
    settings = config.to_dict()
    for name in ("sigma", "n_samples", "adaptive", "seed"):  # set per run and item
        settings.pop(name, None)
    return settings


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
