"""Reports of an evaluation: ``summary.json``, a Markdown table and the sigma-sweep plot (PNG).

``summary.json``::

    {"benchmark": "pope", "model": "...", "data": "...", "n_items": 120, "judge": null, "seed": 0,
     "guard": {...other GuardConfig settings...},
     "runs": [{"sigma": 0.0, "n_samples": 1, "adaptive": false, "tag": "", "key": "sigma=0",
               "metrics": {...}, "cost": {"model_calls", "calls_per_item", "seconds_per_item"},
               "stability": {"mean_agreement", "flagged_rate"}}, ...]}

Metrics: POPE accuracy, precision, recall, f1, yes_ratio (+ confusion counts, by_category per split);
MM-SafetyBench asr, n, unparsed (+ asr_upper, safe, unsafe, failed, by_category per scenario);
LLaVA-Bench relative_score, model_score, reference_score, n, unparsed (+ by_category).

Every run's metrics also hold ``refusals``, ``refusal_rate`` and ``over_refusal`` (the refusal rate on benign
inputs: POPE, LLaVA-Bench; None on MM-SafetyBench); endpoint runs add ``calls``, ``retries`` and
``failed_calls`` (HTTP calls that failed after their retries) to ``cost``.

The plot draws utility (POPE accuracy and F1, LLaVA-Bench relative score / 100), attack success rate and
over-refusal against sigma, one panel each; the undefended model (sigma 0) is the dashed line. It is drawn with
matplotlib's Agg canvas directly, so no pyplot backend is switched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ATTACK_METRICS", "REFUSAL_METRICS", "UTILITY_METRICS", "combine", "load_summary", "markdown_table",
           "plot_roc", "plot_sweep", "write_report"]

#: benchmark -> [(metric, label, scale)] drawn in the utility panel (value x scale).
UTILITY_METRICS: dict[str, list[tuple[str, str, float]]] = {
    "pope": [("accuracy", "POPE accuracy", 1.0), ("f1", "POPE F1", 1.0)],
    "llavabench": [("relative_score", "LLaVA-Bench relative score / 100", 0.01)],
}
#: benchmark -> [(metric, label, scale)] drawn in the attack-success panel.
ATTACK_METRICS: dict[str, list[tuple[str, str, float]]] = {"mmsafety": [("asr", "attack success rate", 1.0)]}
#: benchmark -> [(metric, label, scale)] drawn in the over-refusal panel (refusals on benign inputs).
REFUSAL_METRICS: dict[str, list[tuple[str, str, float]]] = {
    "pope": [("over_refusal", "POPE over-refusal", 1.0)],
    "llavabench": [("over_refusal", "LLaVA-Bench over-refusal", 1.0)],
}

_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "pope": [("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
             ("yes_ratio", "yes-ratio"), ("over_refusal", "over-refusal"), ("answered", "answered"),
             ("failed", "failed")],
    "mmsafety": [("asr", "ASR"), ("asr_upper", "ASR if unparsed unsafe"), ("refusal_rate", "refusal rate"),
                 ("n", "judged"), ("unparsed", "unparsed"), ("failed", "failed")],
    "llavabench": [("relative_score", "relative %"), ("model_score", "model x10"),
                   ("reference_score", "reference x10"), ("over_refusal", "over-refusal"), ("answered", "answered"),
                   ("unparsed", "unparsed"), ("failed", "failed")],
}
_MAIN = {"pope": "accuracy", "mmsafety": "asr", "llavabench": "relative_score"}


def write_report(summary: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``summary.json``, ``summary.md`` and ``sweep.png`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "table": out / "summary.md", "plot": out / "sweep.png"}
    paths["summary"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["table"].write_text(markdown_table(summary), encoding="utf-8")
    plot_sweep([summary], paths["plot"])
    return paths


def load_summary(path: str | Path) -> dict[str, Any]:
    """A ``summary.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        from smoothguard.eval.errors import EvalError

        raise EvalError(f"no summary found at {path}; run `smoothguard eval BENCH ... --out DIR` first")
    return json.loads(path.read_text(encoding="utf-8"))


def _label(run: dict[str, Any]) -> str:
    adaptive = " adaptive" if run.get("adaptive") else ""
    text = "0 (undefended)" if run["sigma"] == 0 else f"{run['sigma']:g}{adaptive}"
    return text + (f" [{run['tag']}]" if run.get("tag") else "")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as Markdown: a header, one row per run, and the main metric per category."""
    bench = summary["benchmark"]
    columns = _COLUMNS.get(bench, [])
    guard = summary.get("guard") or {}
    lines = [f"## {bench}: {summary.get('model')}", "",
             f"data `{summary.get('data')}`, {summary.get('n_items')} items, judge {summary.get('judge') or 'none'}, "
             f"seed {summary.get('seed')}; guard: clustering {guard.get('clustering')}, safety_weight "
             f"{guard.get('safety_weight')}, include_original {guard.get('include_original')}, "
             f"sigma_space {guard.get('sigma_space')}", ""]
    http = any("retries" in (run.get("cost") or {}) for run in summary["runs"])  # an endpoint run
    header = ["σ", "N", *[title for _, title in columns], "calls/item", "s/item", "agreement", "flagged",
              *(["retries", "failed calls"] if http else [])]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in summary["runs"]:
        m, cost, stab = run["metrics"], run.get("cost") or {}, run.get("stability") or {}
        digits = {"relative_score": 1, "model_score": 1, "reference_score": 1}
        cells = [_label(run), str(run["n_samples"]), *[_fmt(m.get(k), digits.get(k, 3)) for k, _ in columns],
                 _fmt(cost.get("calls_per_item"), 1), _fmt(cost.get("seconds_per_item"), 3),
                 _fmt(stab.get("mean_agreement")), _fmt(stab.get("flagged_rate")),
                 *([_fmt(cost.get("retries")), _fmt(cost.get("failed_calls"))] if http else [])]
        lines.append("| " + " | ".join(cells) + " |")
    main = _MAIN.get(bench)
    categories = sorted({c for run in summary["runs"] for c in (run["metrics"].get("by_category") or {})})
    if main and categories:
        lines += ["", f"{main} by category:", "",
                  "| category | " + " | ".join(_label(r) for r in summary["runs"]) + " |",
                  "|" + "---|" * (len(summary["runs"]) + 1)]
        for cat in categories:
            values = [(r["metrics"].get("by_category") or {}).get(cat, {}).get(main) for r in summary["runs"]]
            lines.append(f"| {cat} | " + " | ".join(_fmt(v, 1 if main == "relative_score" else 3)
                                                   for v in values) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(summaries: Sequence[dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Draw utility and attack success rate against sigma for ``summaries`` into the PNG ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(name, table) for name, table in (("utility", UTILITY_METRICS), ("attack success", ATTACK_METRICS),
                                                ("over-refusal", REFUSAL_METRICS))
              if any(s["benchmark"] in table for s in summaries)]
    if not panels:
        panels = [("utility", UTILITY_METRICS)]
    fig = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    colours = iter(f"C{k}" for k in range(100))
    for index, (panel, table) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        for summary in summaries:
            for metric, label, scale in table.get(summary["benchmark"], []):
                _draw_metric(ax, summary, metric, label, scale, colours)
        ax.set_xlabel("σ (guard noise std)")
        ax.set_ylabel({"attack success": "attack success rate", "over-refusal": "refusals on benign inputs"}
                      .get(panel, "score"))
        ax.set_title(panel)
        ax.set_ylim(-0.02, 1.05 if panel in ("attack success", "over-refusal") else None)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left" if panel == "utility" else "best")
    models = sorted({str(s.get("model")) for s in summaries})
    fig.suptitle(title or ", ".join(models), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def _draw_metric(ax: Any, summary: dict[str, Any], metric: str, label: str, scale: float, colours: Any) -> None:
    groups: dict[tuple, list[tuple[float, float]]] = {}
    baselines: dict[str, float] = {}
    for run in summary["runs"]:
        value = run["metrics"].get(metric)
        if value is None:
            continue
        if run["sigma"] == 0:
            baselines[run.get("tag", "")] = value * scale
        else:
            key = (run["n_samples"], bool(run.get("adaptive")), run.get("tag", ""))
            groups.setdefault(key, []).append((run["sigma"], value * scale))
    tags = sorted({k[2] for k in groups} | set(baselines))
    for tag in tags:
        colour = next(colours)
        suffix = f" [{tag}]" if tag else ""
        for (n, adaptive, group_tag), points in sorted(groups.items()):
            if group_tag != tag:
                continue
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour,
                    linestyle=":" if adaptive else "-",
                    label=f"{label}{suffix}, guarded N={n}{' adaptive' if adaptive else ''}")
        if tag in baselines:
            ax.axhline(baselines[tag], color=colour, linestyle="--", linewidth=1, label=f"{label}{suffix}, undefended")
            ax.plot([0.0], [baselines[tag]], marker="s", color=colour, fillstyle="none")


def combine(paths: Sequence[str | Path], out: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """One report from several evaluation folders: ``report.md`` (their tables) and ``sweep.png``."""
    summaries = [load_summary(p) for p in paths]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "report.md"
    table.write_text("\n".join(markdown_table(s) for s in summaries), encoding="utf-8")
    plot = plot_sweep(summaries, out / "sweep.png", title=title)
    return {"table": table, "plot": plot}


def plot_roc(curves: dict[str, dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Draw ROC curves of agreement as an attack detector into the PNG ``path``.

    curves: ``{label: agreement_detection(...) result}``; each curve is labelled with its AUC, and the
    operating point at ``min_agreement`` (false-flag rate, detection rate) is marked.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    for k, (label, det) in enumerate(curves.items()):
        colour = f"C{k}"
        xs, ys = zip(*det["roc"], strict=True)
        ax.plot(xs, ys, color=colour, drawstyle="steps-post", label=f"{label} (AUC {det['auc']:.2f})")
        ax.plot([det["false_flag_rate"]], [det["detection_rate"]], marker="o", color=colour)
    ax.set_xlabel("false-flag rate on clean inputs")
    ax.set_ylabel("attacked inputs flagged")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or "agreement as an attack detector", fontsize=10)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
