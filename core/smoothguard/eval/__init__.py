"""The evaluation harness: benchmark readers, metrics, judges, a resumable runner, reports and plots.

>>> from smoothguard.eval import read_pope, run_eval
>>> summary = run_eval(backend, read_pope("data/pope"), "out/pope", sigmas=[0, 0.1, 0.15, 0.2], n_samples=11)

or ``smoothguard eval pope --model ID --data data/pope --sigma 0 0.1 0.15 0.2 --out out/pope``.

- :mod:`~smoothguard.eval.readers`: POPE, MM-SafetyBench, LLaVA-Bench in-the-Wild -> :class:`Dataset`.
- :mod:`~smoothguard.eval.metrics`: POPE metrics (standard yes/no parsing), attack success rate, relative score.
- :mod:`~smoothguard.eval.judges`: keyword and LangChain-model safety judges, LLaVA-Bench review judges.
- :mod:`~smoothguard.eval.runner`: :func:`run_eval` / :class:`EvalRunner`, answers logged and resumable.
- :mod:`~smoothguard.eval.report`: ``summary.json``, Markdown table, sigma-sweep PNG; :func:`combine`.
- :mod:`~smoothguard.eval.datasets`: small datasets in each format from the testbed generator (offline).
- :mod:`~smoothguard.eval.attack_study`: :class:`AttackStudy`, attack success and detection vs sigma (the
  efficacy report's attack half).
- :mod:`~smoothguard.eval.endpoint`: :class:`EndpointModel`, a model behind an OpenAI-compatible server
  (``--model openai:MODEL``), with retries; :mod:`~smoothguard.eval.cost`: the ``--dry-run`` estimate.
- :mod:`~smoothguard.eval.oracle`: :class:`ShapeOracle`, a scripted pixel-reading backend for offline runs.

Names load on first use; ``import smoothguard`` never imports this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smoothguard.eval.attack_study import ATTACKS, AttackStudy
    from smoothguard.eval.cost import estimate
    from smoothguard.eval.datasets import write_all, write_llavabench, write_mmsafety, write_pope
    from smoothguard.eval.endpoint import EndpointError, EndpointModel
    from smoothguard.eval.errors import DatasetError, EvalError
    from smoothguard.eval.judges import (
        KeywordJudge,
        LLMJudge,
        LLMReviewJudge,
        OverlapJudge,
        Review,
        SafetyVerdict,
    )
    from smoothguard.eval.metrics import (
        BENIGN_BENCHMARKS,
        agreement_detection,
        attack_success_rate,
        parse_yes_no,
        pope_metrics,
        refusals,
        relative_score,
    )
    from smoothguard.eval.oracle import ShapeOracle
    from smoothguard.eval.readers import (
        Dataset,
        EvalItem,
        read_dataset,
        read_llavabench,
        read_mmsafety,
        read_pope,
    )
    from smoothguard.eval.report import combine, load_summary, markdown_table, plot_roc, plot_sweep, write_report
    from smoothguard.eval.runner import AnswerLog, EvalRunner, RunSpec, read_answers, run_eval, sweep_specs

_LAZY = {
    **dict.fromkeys(("ATTACKS", "AttackStudy"), "attack_study"),
    "estimate": "cost",
    **dict.fromkeys(("EndpointError", "EndpointModel"), "endpoint"),
    **dict.fromkeys(("write_all", "write_llavabench", "write_mmsafety", "write_pope"), "datasets"),
    **dict.fromkeys(("DatasetError", "EvalError"), "errors"),
    **dict.fromkeys(("KeywordJudge", "LLMJudge", "LLMReviewJudge", "OverlapJudge", "Review", "SafetyVerdict"),
                    "judges"),
    **dict.fromkeys(("BENIGN_BENCHMARKS", "agreement_detection", "attack_success_rate", "parse_yes_no",
                     "pope_metrics", "refusals", "relative_score"), "metrics"),
    "ShapeOracle": "oracle",
    **dict.fromkeys(("Dataset", "EvalItem", "read_dataset", "read_llavabench", "read_mmsafety", "read_pope"),
                    "readers"),
    **dict.fromkeys(("combine", "load_summary", "markdown_table", "plot_roc", "plot_sweep", "write_report"), "report"),
    **dict.fromkeys(("AnswerLog", "EvalRunner", "RunSpec", "read_answers", "run_eval", "sweep_specs"), "runner"),
}

__all__ = [
    "ATTACKS",
    "BENIGN_BENCHMARKS",
    "AnswerLog",
    "AttackStudy",
    "Dataset",
    "DatasetError",
    "EndpointError",
    "EndpointModel",
    "EvalError",
    "EvalItem",
    "EvalRunner",
    "KeywordJudge",
    "LLMJudge",
    "LLMReviewJudge",
    "OverlapJudge",
    "Review",
    "RunSpec",
    "SafetyVerdict",
    "ShapeOracle",
    "agreement_detection",
    "attack_success_rate",
    "combine",
    "estimate",
    "load_summary",
    "markdown_table",
    "parse_yes_no",
    "plot_roc",
    "plot_sweep",
    "pope_metrics",
    "read_answers",
    "read_dataset",
    "read_llavabench",
    "read_mmsafety",
    "read_pope",
    "refusals",
    "relative_score",
    "run_eval",
    "sweep_specs",
    "write_all",
    "write_llavabench",
    "write_mmsafety",
    "write_pope",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smoothguard.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"smoothguard.eval.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
