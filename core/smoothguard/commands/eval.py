"""``smoothguard eval``: benchmark a model undefended (sigma 0) and guarded over a sigma sweep.

    smoothguard eval pope --model Qwen/Qwen2.5-VL-3B-Instruct --data data/pope --images data/coco/val2014 \\
        --sigma 0 0.1 0.15 0.2 --n-samples 11 --out runs/pope
    smoothguard eval mmsafety --model llava-hf/llava-1.5-7b-hf --data MM-SafetyBench/data --out runs/mms \\
        --judge openai:meta-llama/Llama-Guard-3-8B --judge-base-url http://localhost:8000/v1 --judge-style llamaguard
    smoothguard eval llavabench --model ... --data llava-bench-in-the-wild --out runs/wild --judge openai:gpt-4o
    smoothguard eval report runs/pope runs/mms --out runs/report      # one table and plot from several runs
    smoothguard eval pope --model openai:Qwen/Qwen2.5-VL-7B-Instruct --base-url http://127.0.0.1:8000/v1 \
        --data data/pope --concurrency 64 --out runs/pope-vllm     # an OpenAI-compatible server (vLLM); --dry-run first
    smoothguard eval make-data data/standin                          # small offline datasets in each format
    smoothguard eval attacks --model testbed --surrogate testbed:surrogate --data data/standin/pope \
        --questions 30 --out runs/attacks                  # attack success and detection vs sigma, 4 attacks

Writes ``OUT/answers.jsonl`` (resumable: rerun the same command after a kill), ``OUT/summary.json``,
``OUT/summary.md`` and ``OUT/sweep.png``. ``--model`` takes a hub id or local directory, ``testbed`` (the
shipped tiny VLM, when installed) or ``oracle`` (a scripted pixel-reading stand-in for smoke runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from smoothguard.commands._model import add_model_arguments, load_model

__all__ = ["configure", "main"]

_DEFAULT_SIGMAS = (0.0, 0.1, 0.15, 0.2)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` subcommands (pope, mmsafety, llavabench, attacks, report, make-data) to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    benches = parser.add_subparsers(dest="benchmark", metavar="BENCH", required=True)
    pope = benches.add_parser("pope", help="POPE: yes/no object questions (utility)")
    pope.add_argument("--images", metavar="DIR", help="image folder (default DATA/images or DATA/val2014)")
    pope.add_argument("--splits", nargs="+", metavar="SPLIT", help="keep only these splits (adversarial popular "
                      "random)")
    pope.add_argument("--prompt-suffix", default="", metavar="TEXT",
                      help="appended to every question, e.g. LLaVA's '\\nAnswer the question using a single word "
                           "or phrase.' (default none; \\n and \\t are read as newline and tab)")
    mms = benches.add_parser("mmsafety", help="MM-SafetyBench: harmful requests (attack success rate)")
    mms.add_argument("--image-type", choices=("SD", "SD_TYPO", "TYPO"), default="SD_TYPO",
                     help="MM-SafetyBench image set (default SD_TYPO)")
    mms.add_argument("--scenarios", nargs="+", metavar="NAME", help="scenario files to read (default all)")
    mms.add_argument("--benign", action="store_true",
                     help="the data is a benign control set in this format: its refusals are over-refusals")
    mms.add_argument("--universal-image", metavar="PATH",
                     help="one image for every question, with the plain Question as prompt (universal attack)")
    wild = benches.add_parser("llavabench", help="LLaVA-Bench in-the-Wild: open answers scored by a judge")
    wild.add_argument("--images", metavar="DIR", help="image folder (default DATA/images)")
    for sub, judges in ((pope, None), (mms, "keyword (default) or openai:MODEL"),
                        (wild, "overlap (offline proxy) or openai:MODEL; default: answers only, unscored")):
        _common(sub, judges)
        sub.set_defaults(func=run)
    report = benches.add_parser("report", help="one table and sigma-sweep plot from several eval folders")
    report.add_argument("dirs", nargs="+", metavar="DIR", help="folders written by smoothguard eval BENCH --out")
    report.add_argument("--out", required=True, metavar="DIR", help="where report.md and sweep.png go")
    report.add_argument("--title", help="plot title")
    report.set_defaults(func=run_report)
    study = benches.add_parser("attacks", help="attack success and agreement-based detection vs sigma: minimal, "
                               "full-budget, transfer and EOT PGD on POPE 'no' questions")
    study.add_argument("--model", required=True, metavar="ID_OR_PATH",
                       help="the defended model: 'testbed', a hub id or a local directory (a PGD-supported family), "
                            "or openai:MODEL with --base-url (then only the transfer attack: crafted on --surrogate)")
    study.add_argument("--surrogate", metavar="ID_OR_PATH",
                       help="the model the transfer attack is crafted on, e.g. testbed:surrogate (needed for it)")
    study.add_argument("--data", required=True, metavar="DIR", help="POPE-format folder; its 'no' items are attacked")
    study.add_argument("--images", metavar="DIR", help="image folder (default DATA/images or DATA/val2014)")
    study.add_argument("--prompt-suffix", default="", metavar="TEXT", help="appended to every question, as for pope")
    study.add_argument("--out", required=True, metavar="DIR", help="output folder; rerun to resume")
    study.add_argument("--questions", type=int, default=30, metavar="N", help="'no' questions to attack (default 30)")
    study.add_argument("--attacks", nargs="+", choices=("minimal", "full", "transfer", "eot"),
                       help="default: all four (transfer only for an openai:MODEL)")
    study.add_argument("--epsilons", type=int, nargs="+", default=[4, 8, 16], metavar="LEVELS",
                       help="L-infinity budgets in 8-bit levels (default 4 8 16, i.e. 4/255 ...)")
    study.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3], metavar="S",
                       help="guard noise levels; the undefended model is always run (default 0.05 0.1 0.15 0.2 0.3)")
    study.add_argument("--n-samples", type=int, default=11, help="guard candidates incl. the original (default 11)")
    study.add_argument("--steps", type=int, default=100, help="PGD steps (default 100; step size 1/255)")
    study.add_argument("--eot-samples", type=int, default=8, help="EOT noisy copies per step (default 8)")
    study.add_argument("--eot-sigma", type=float, default=0.2, help="EOT noise std, guard units (default 0.2)")
    study.add_argument("--eot-steps", type=int, metavar="N", help="EOT-PGD steps (default: --steps)")
    study.add_argument("--adaptive-sigma", type=float, nargs="*", default=[0.1, 0.2], metavar="S",
                       help="sigmas also run in adaptive mode, clean and minimal inputs (default 0.1 0.2)")
    study.add_argument("--seed", type=int, default=0, help="noise and attack seed (default 0)")
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    study.add_argument("--dry-run", action="store_true",
                       help="print the model calls and estimated tokens per input and sigma, then stop")
    add_model_arguments(study)
    add_endpoint_arguments(study)
    study.set_defaults(func=run_attack_study)
    data = benches.add_parser("make-data", help="write small offline datasets in each benchmark's format")
    data.add_argument("out", metavar="DIR", help="writes DIR/pope, DIR/mmsafety, DIR/llavabench")
    data.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    data.add_argument("--pope-images", type=int, default=20, metavar="N",
                      help="POPE images; 2 questions per image and split (default 20: 120 questions)")
    data.add_argument("--mmsafety-per-scenario", type=int, default=4, metavar="N",
                      help="MM-SafetyBench stand-in questions per scenario, at most 4 (default 4)")
    data.add_argument("--llavabench", type=int, default=12, metavar="N", help="LLaVA-Bench questions (default 12)")
    data.add_argument("--size", type=int, default=64, help="POPE and LLaVA-Bench image side in pixels (default 64, "
                      "the testbed's)")
    data.set_defaults(func=run_make_data)


def _common(parser: argparse.ArgumentParser, judges: str | None) -> None:
    parser.add_argument("--model", required=True, metavar="ID_OR_PATH",
                        help="hub id or local directory of a supported VLM, 'testbed', 'oracle' (scripted), or "
                             "openai:MODEL (a model behind an OpenAI-compatible API, with --base-url)")
    parser.add_argument("--data", required=True, metavar="DIR", help="the benchmark's folder (or POPE .jsonl)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder; rerun to resume")
    parser.add_argument("--sigma", type=float, nargs="+", default=list(_DEFAULT_SIGMAS), metavar="S",
                        help="noise levels; 0 is the undefended model (default 0 0.1 0.15 0.2)")
    parser.add_argument("--n-samples", type=int, default=11, help="guard candidates incl. the original (default 11)")
    parser.add_argument("--adaptive", action="store_true", help="guard in adaptive mode (early stop)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only N items")
    parser.add_argument("--sample-seed", type=int, metavar="SEED",
                        help="with --limit: a seeded random subset instead of the first N")
    parser.add_argument("--seed", type=int, default=0, help="base of the per-item noise seeds (default 0)")
    parser.add_argument("--retry-errors", action="store_true", help="ask again items whose generation failed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the model calls and estimated prompt and image tokens per sigma (what is left "
                             "to do in --out), then stop; loads no model and sends nothing")
    add_endpoint_arguments(parser)
    if judges is not None:
        judge = parser.add_argument_group("judge")
        judge.add_argument("--judge", help=judges)
        judge.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible server (vLLM, TGI, ...)")
        judge.add_argument("--judge-style", choices=("instruction", "llamaguard"), default="instruction",
                           help="safety judge prompt: instruction (default) or llamaguard (a Llama Guard model)")
    guard = parser.add_argument_group("guard")
    guard.add_argument("--sigma-space", choices=("normalized", "pixel"), default=None,
                       help="units of sigma (default normalized)")
    guard.add_argument("--clustering", choices=("kmeans", "agglomerative"), default=None)
    guard.add_argument("--safety-weight", type=float, default=None, help="0: plain majority vote")
    add_model_arguments(parser)


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``endpoint`` argument group: for ``--model openai:MODEL``."""
    group = parser.add_argument_group("endpoint (--model openai:MODEL)")
    group.add_argument("--base-url", metavar="URL",
                       help="the API root of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM)")
    group.add_argument("--api-key-env", metavar="VAR",
                       help="environment variable holding the API key (default: send none, as local vLLM needs)")
    group.add_argument("--concurrency", type=int, default=16, metavar="K",
                       help="model calls in flight at most (default 16)")
    group.add_argument("--timeout", type=float, default=120.0, metavar="S",
                       help="seconds one call may take before it is retried (default 120)")
    group.add_argument("--max-retries", type=int, default=5, metavar="N",
                       help="retries of a call answered 429/408/409/5xx, timed out or cut off, with exponential "
                            "backoff from 0.5 s up to 30 s (default 5)")
    group.add_argument("--image-resize", default="auto", metavar="RULE",
                       help="size the guard draws the noise at, the size the model looks at: auto (default: "
                            "qwen2-vl for a Qwen2-VL/Qwen2.5-VL name, else openai), openai, anthropic, qwen2-vl, a "
                            "longest side (768) or a bound (1024x768)")


def run(args: argparse.Namespace) -> int:
    """Read the data, load the model, run and report. Exit 0, or 2 for a usage, data or config error."""
    from smoothguard.errors import SmoothGuardError
    from smoothguard.eval.readers import read_dataset
    from smoothguard.eval.runner import EvalRunner, sweep_specs

    try:
        options = _data_options(args)
        dataset = read_dataset(args.benchmark, args.data, **options)
        dataset = _subset(dataset, args.limit, args.sample_seed)
        specs = sweep_specs(args.sigma, args.n_samples, adaptive=args.adaptive)
        endpoint = _endpoint(args)
        if args.dry_run:
            return _dry_run(args, dataset, specs, endpoint)
        judge = _judge(args)
        guard = {k: v for k, v in (("sigma_space", args.sigma_space), ("clustering", args.clustering),
                                   ("safety_weight", args.safety_weight)) if v is not None}
        options: dict[str, Any] = {"noise_space": args.noise_space, "max_new_tokens": args.max_new_tokens}
        if endpoint is not None:  # the noise is drawn at the endpoint's input size: part of what answers depend on
            guard["image_resize"] = endpoint.resize_rule
            options = {"max_new_tokens": args.max_new_tokens}
        runner = EvalRunner(None, dataset, args.out, model_name=args.model, judge=judge, guard_settings=guard,
                            seed=args.seed, progress=not args.no_progress, retry_errors=args.retry_errors,
                            options=options, benign=True if getattr(args, "benign", False) else None)
        runner.check_out()  # before loading the model: a wrong --out fails in a second, not after minutes
        runner.backend = endpoint if endpoint is not None else _load(args)
        summary = runner.run(specs)
    except (SmoothGuardError, ValueError, OSError) as exc:
        print(f"smoothguard eval: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from smoothguard.eval.report import markdown_table

        print(markdown_table(summary))
        print(f"wrote {args.out}/summary.json, summary.md, sweep.png, answers.jsonl")
    retries = sum((run.get("cost") or {}).get("retries") or 0 for run in summary["runs"])
    failed_calls = sum((run.get("cost") or {}).get("failed_calls") or 0 for run in summary["runs"])
    if retries or failed_calls:
        print(f"smoothguard eval: {retries} calls retried, {failed_calls} failed after their retries "
              "(counted apart: 'retries' and 'failed_calls' in answers.jsonl and summary.json)", file=sys.stderr)
    failed = sum(run["metrics"].get("failed") or 0 for run in summary["runs"])
    if failed:
        print(f"smoothguard eval: {failed} answers failed (see 'error' in answers.jsonl; --retry-errors retries)",
              file=sys.stderr)
    return 0


def _endpoint(args: argparse.Namespace) -> Any:
    """The :class:`~smoothguard.eval.endpoint.EndpointModel` of ``--model openai:MODEL``, else None (and the
    endpoint options refused, so they are not silently ignored)."""
    from smoothguard.errors import ConfigError
    from smoothguard.eval.endpoint import EndpointModel, api_key_from_env, parse_model_spec
    from smoothguard.image_resize import parse_rule

    name = parse_model_spec(args.model)
    if name is None:
        if args.base_url or args.api_key_env:
            raise ConfigError("--base-url and --api-key-env are for --model openai:MODEL (a served model); "
                              f"--model {args.model} runs in this process")
        return None
    if not args.base_url:
        raise ConfigError(f"--model {args.model} needs --base-url, the server's API root (e.g. "
                          "http://127.0.0.1:8000/v1 for vLLM, https://api.openai.com/v1 with --api-key-env "
                          "OPENAI_API_KEY)")
    return EndpointModel(name, args.base_url, api_key=api_key_from_env(args.api_key_env),
                         concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                         max_tokens=args.max_new_tokens, image_resize=parse_rule(args.image_resize))


def _dry_run(args: argparse.Namespace, dataset: Any, specs: Any, endpoint: Any) -> int:
    from smoothguard.eval.cost import cost_table, estimate

    rule = endpoint.resize_rule if endpoint is not None else "qwen2-vl"
    costs = estimate(dataset, specs, rule=rule, max_output_tokens=args.max_new_tokens, out=args.out,
                     retry_errors=args.retry_errors)
    if args.json:
        print(json.dumps({"model": args.model, "image_rule": rule, "runs": [c.to_dict() for c in costs]}, indent=2))
    else:
        print(cost_table(costs, rule=rule, model=args.model), end="")
    return 0


def _dry_run_study(args: argparse.Namespace, study: Any, dataset: Any, endpoint: Any) -> int:
    from pathlib import Path

    from smoothguard.eval.cost import cost_table, estimate

    rule = endpoint.resize_rule if endpoint is not None else "qwen2-vl"
    costs = [cost for tag in study.tags()
             for cost in estimate(dataset, study.run_specs(tag), rule=rule, max_output_tokens=args.max_new_tokens,
                                  out=Path(args.out) / tag)]
    crafting = len(study.tags()) - 1
    note = (f"plus crafting {crafting} x {len(dataset)} adversarial images with PGD in this process (up to "
            f"{study.steps} gradient steps each; images already in {args.out}/adv are not crafted again)")
    if getattr(args, "json", False):
        print(json.dumps({"model": args.model, "image_rule": rule, "runs": [c.to_dict() for c in costs],
                          "crafting": {"images": crafting * len(dataset), "max_steps": study.steps}}, indent=2))
    else:
        print(cost_table(costs, rule=rule, model=args.model) + "\n" + note)
    return 0


def run_attack_study(args: argparse.Namespace) -> int:
    """Attack, answer and report (``OUT/study.md``, ``study.json``, ``asr_*.png``, ``roc_*.png``)."""
    from smoothguard.errors import SmoothGuardError
    from smoothguard.eval.attack_study import AttackStudy, negatives
    from smoothguard.eval.readers import read_pope

    try:
        endpoint = _endpoint(args)
        if args.attacks is None:
            args.attacks = ["transfer"] if endpoint is not None else ["minimal", "full", "transfer", "eot"]
        if endpoint is not None and set(args.attacks) != {"transfer"}:
            raise ValueError(f"--model {args.model} is served, so it has no gradients: only the transfer attack "
                             "(crafted on --surrogate) applies; use --attacks transfer")
        study = AttackStudy(attacks=tuple(args.attacks), epsilons=tuple(args.epsilons), sigmas=tuple(args.sigma),
                            steps=args.steps, eot_samples=args.eot_samples, eot_sigma=args.eot_sigma,
                            eot_steps=args.eot_steps, n_samples=args.n_samples,
                            adaptive_sigmas=tuple(args.adaptive_sigma), seed=args.seed)
        if "transfer" in args.attacks and not args.surrogate:
            raise ValueError("the transfer attack needs --surrogate (e.g. testbed:surrogate); or leave it out of "
                             "--attacks")
        pope = read_pope(args.data, images=args.images, prompt_suffix=_unescape(args.prompt_suffix))
        dataset = negatives(pope, args.questions)
        if args.dry_run:
            return _dry_run_study(args, study, dataset, endpoint)
        model = endpoint if endpoint is not None else load_model(args)
        surrogate = load_model(argparse.Namespace(**{**vars(args), "model": args.surrogate})) if (
            "transfer" in args.attacks) else None
        result = study.run(model, dataset, args.out, surrogate=surrogate, model_name=args.model,
                           progress=not args.no_progress)
    except (SmoothGuardError, ValueError, OSError) as exc:
        print(f"smoothguard eval attacks: {exc}", file=sys.stderr)
        return 2
    from smoothguard.eval.attack_study import study_markdown

    print(study_markdown(result))
    print(f"wrote {args.out}/study.md, study.json, asr_*.png, roc_*.png")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Combine eval folders into one report.md and sweep.png."""
    from smoothguard.errors import SmoothGuardError
    from smoothguard.eval.report import combine

    try:
        paths = combine(args.dirs, args.out, title=args.title)
    except (SmoothGuardError, OSError, json.JSONDecodeError) as exc:
        print(f"smoothguard eval report: {exc}", file=sys.stderr)
        return 2
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"wrote {paths['table']} and {paths['plot']}")
    return 0


def run_make_data(args: argparse.Namespace) -> int:
    """Write the offline datasets."""
    from pathlib import Path

    from smoothguard.eval.datasets import write_llavabench, write_mmsafety, write_pope

    root = Path(args.out)
    try:
        paths = {"pope": write_pope(root / "pope", n_images=args.pope_images, seed=args.seed, size=args.size),
                 "mmsafety": write_mmsafety(root / "mmsafety", n_per_scenario=args.mmsafety_per_scenario,
                                            seed=args.seed),
                 "llavabench": write_llavabench(root / "llavabench", n=args.llavabench, seed=args.seed,
                                                size=args.size)}
    except (ValueError, OSError) as exc:
        print(f"smoothguard eval make-data: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.benchmark == "pope":
        return {"images": args.images, "splits": args.splits, "prompt_suffix": _unescape(args.prompt_suffix)}
    if args.benchmark == "mmsafety":
        return {"image_type": args.image_type, "scenarios": args.scenarios, "universal_image": args.universal_image}
    return {"images": args.images}


def _unescape(text: str) -> str:
    """``\\n`` and ``\\t`` typed on a command line as newline and tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _subset(dataset: Any, limit: int | None, sample_seed: int | None) -> Any:
    if limit is None or sample_seed is None or limit >= len(dataset):
        return dataset.head(limit)
    import dataclasses

    import numpy as np

    keep = sorted(np.random.default_rng(sample_seed).choice(len(dataset), size=limit, replace=False).tolist())
    return dataclasses.replace(dataset, items=tuple(dataset.items[i] for i in keep))


def _judge(args: argparse.Namespace) -> Any:
    from smoothguard.errors import ConfigError

    spec = getattr(args, "judge", None)
    if spec is None:
        return None
    if args.benchmark == "mmsafety" and spec == "keyword":
        from smoothguard.eval.judges import KeywordJudge

        return KeywordJudge()
    if args.benchmark == "llavabench" and spec == "overlap":
        from smoothguard.eval.judges import OverlapJudge

        return OverlapJudge()
    if not spec.startswith("openai:") or len(spec) <= len("openai:"):
        offline = "keyword" if args.benchmark == "mmsafety" else "overlap"
        raise ConfigError(f"--judge must be {offline} or openai:MODEL (a chat model behind an OpenAI-compatible "
                          f"API), got {spec!r}")
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ConfigError("--judge openai:MODEL needs langchain-openai: pip install 'smoothguard[openai]'") from exc
    settings: dict[str, Any] = {"model": spec[len("openai:"):], "temperature": 0.0, "max_retries": 6}
    if args.judge_base_url:
        settings["base_url"] = args.judge_base_url
        if not os.environ.get("OPENAI_API_KEY"):
            settings["api_key"] = "EMPTY"  # local servers (vLLM, TGI) take any key
    chat = ChatOpenAI(**settings)
    if args.benchmark == "mmsafety":
        from smoothguard.eval.judges import LLMJudge

        return LLMJudge(chat, style=args.judge_style, name=f"llm:{spec[len('openai:'):]}:{args.judge_style}")
    from smoothguard.eval.judges import LLMReviewJudge

    return LLMReviewJudge(chat, name=f"llm-review:{spec[len('openai:'):]}")


def _load(args: argparse.Namespace) -> Any:
    if args.model == "oracle":
        from smoothguard.eval.oracle import ShapeOracle

        return ShapeOracle()
    return load_model(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m smoothguard.commands.eval ...``: the same as ``smoothguard eval ...``."""
    parser = argparse.ArgumentParser(prog="smoothguard eval", description=__doc__.split("\n\n", 1)[0])
    configure(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
