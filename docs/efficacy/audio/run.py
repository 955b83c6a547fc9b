"""Audio efficacy of the guard on the shipped audio testbed (``load_testbed("audio")``): utility against
``audio_sigma``, attack success undefended and guarded, agreement as a detector, cost in calls.

- clips: held-out clips of :mod:`smoothguard.testbed.audio_data` from ``numpy.random.default_rng([seed, 7, k])``
  (k: the kind's index; the trainer uses streams 0 and 1 and seed + 1000), the three question kinds;
- utility: ``--utility-questions`` per kind, greedy exact match undefended (one call) and through
  ``SmoothGuard(audio_sigma=s, n_samples=11, seed=i)`` at each ``--sigmas`` value, and adaptive at 0.01;
- attacks: per kind the first ``--questions`` clips the undefended model answers right; the target is
  ``audio_testbed_target(answer)`` (one step away: yes <-> no, high <-> low, N -> N + 1 beeps, 4 -> 3);
  :class:`~smoothguard.attacks.AudioPGDAttack` at each ``--epsilons`` (L-infinity, [-1, 1] units; step
  epsilon / 10): minimal (stopped at the first success, at most ``--steps``), full budget (``--steps``, no stop),
  EOT (``--eot-samples`` noisy copies per step at audio_sigma ``--eot-sigma``, ``--eot-steps``, no stop), and
  transfer (full budget on ``--surrogate``, a second audio testbed of the same architecture trained with another
  seed, replayed on the shipped one; trained first when missing: ``training/audio_train.py --seed 1 --steps 1200``,
  about 10 minutes; ``--no-transfer`` leaves it out). Success
  = the answer contains the target; guarded success the same on the guard's answer; SNR of each clip reported;
- detection: AUC of ``1 - agreement`` separating each attacked set from the same clips clean, at each sigma, with
  the false-flag and detection rates at ``min_agreement`` 0.5 (:func:`smoothguard.eval.metrics.agreement_detection`);
- cost: model calls and seconds per guarded question, and seconds per attack.

Run from the repository root (resumable: finished records in ``results.jsonl`` are kept; rerun after a kill):

    .venv/bin/python docs/efficacy/audio/run.py      # writes docs/efficacy/audio/{results.jsonl,table.md}
    .venv/bin/python docs/efficacy/audio/run.py --table-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SURROGATE = Path("runs/audio-surrogate/model")
ATTACKS = ("minimal", "full", "eot", "transfer")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--utility-questions", type=int, default=100, help="clean questions per kind for utility (100)")
    p.add_argument("--questions", type=int, default=15, help="attacked questions per kind (15)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    p.add_argument("--epsilons", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eot-samples", type=int, default=4)
    p.add_argument("--eot-steps", type=int, default=50)
    p.add_argument("--eot-sigma", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--surrogate", type=Path, default=SURROGATE,
                   help=f"the transfer attack's audio testbed directory (default {SURROGATE}, trained when missing)")
    p.add_argument("--no-transfer", action="store_true", help="leave the transfer attack out")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    results = args.out / "results.jsonl"
    if args.no_transfer:
        args.surrogate = None
    if not args.table_only:
        if args.surrogate is not None and not (args.surrogate / "testbed.json").is_file():
            train_surrogate(args.surrogate)
        measure(args, results)
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    (args.out / "table.md").write_text(tables(records, args) + "\n")
    print((args.out / "table.md").read_text())
    return 0


def train_surrogate(model_dir: Path) -> None:
    """Train the transfer surrogate into ``model_dir``'s parent (``model_dir`` = ``RUN/model``): the shipped
    architecture and recipe, seed 1 (other weights and other data), 1,200 steps of 64 clips."""
    import os
    import subprocess

    root = HERE.parents[2]
    command = [sys.executable, str(root / "training" / "audio_train.py"), "--out", str(model_dir.parent), "--seed", "1",
               "--steps", "1200", "--eval-every", "400", "--eval-examples", "100", "--eval-sigmas", "", "--resume"]
    paths = [str(root / "core"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    print("training the transfer surrogate:", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def measure(args: argparse.Namespace, results: Path) -> None:
    import torch

    from smoothguard import Media, SmoothGuard
    from smoothguard.attacks import AudioPGDAttack, audio_testbed_target
    from smoothguard.testbed import load_testbed
    from smoothguard.testbed.audio_data import AUDIO_KINDS, SAMPLE_RATE, make_audio_example

    torch.set_num_threads(1)
    backend = load_testbed("audio", max_new_tokens=12)
    surrogate = None
    if args.surrogate is not None:
        from smoothguard.testbed import load_testbed_from

        surrogate = load_testbed_from(args.surrogate, max_new_tokens=12)
    done = set()
    if results.exists():
        done = {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}
    out = results.open("a")

    def record(key: str, **data) -> None:
        out.write(json.dumps({"key": key, **data}) + "\n")
        out.flush()

    def guarded(clip: Media, question: str, sigma: float, seed: int, **extra) -> tuple[str, float, int, float]:
        started = time.perf_counter()
        r = SmoothGuard(audio_sigma=sigma, n_samples=11, seed=seed, **extra).ask(backend, question, audio=[clip])
        return r.answer, r.agreement, r.n_used, time.perf_counter() - started

    for k, kind in enumerate(AUDIO_KINDS):
        rng = np.random.default_rng([args.seed, 7, k])
        examples = [make_audio_example(rng, kind) for _ in range(max(args.utility_questions, 4 * args.questions))]
        attacked = 0
        for i, ex in enumerate(examples):
            clip = Media.audio(ex.clip.wave, sample_rate=SAMPLE_RATE)
            base = f"{kind}-{i}"
            if i < args.utility_questions:
                key = f"utility/{base}"
                if key not in done:
                    t = time.perf_counter()
                    answer = backend.generate(ex.question, [[clip]])[0]
                    row = {"kind": kind, "undefended": answer == ex.answer, "seconds_0": time.perf_counter() - t}
                    for s in args.sigmas:
                        a, agr, n, sec = guarded(clip, ex.question, s, i)
                        row[f"s{s:g}"] = {"correct": a == ex.answer, "agreement": agr, "calls": n, "seconds": sec}
                    a, agr, n, sec = guarded(clip, ex.question, 0.01, i, adaptive=True)
                    row["adaptive_0.01"] = {"correct": a == ex.answer, "agreement": agr, "calls": n, "seconds": sec}
                    record(key, stage="utility", **row)
            if attacked >= args.questions:
                continue
            if backend.generate(ex.question, [[clip]])[0] != ex.answer:
                continue
            attacked += 1
            target = audio_testbed_target(ex.answer)
            key = f"clean/{base}"
            if key not in done:
                row = {"kind": kind, "target": target}
                for s in args.sigmas:
                    a, agr, n, sec = guarded(clip, ex.question, s, i)
                    row[f"s{s:g}"] = {"success": target in a, "agreement": agr}
                record(key, stage="clean", **row)
            for eps in args.epsilons:
                for attack in ("minimal", "full", "eot", "transfer"):
                    key = f"attack/{attack}/{eps:g}/{base}"
                    if key in done or (attack == "transfer" and surrogate is None):
                        continue
                    settings = {"minimal": dict(steps=args.steps, early_stop=True),
                                "full": dict(steps=args.steps),
                                "eot": dict(steps=args.eot_steps, eot_samples=args.eot_samples,
                                            eot_sigma=args.eot_sigma),
                                "transfer": dict(steps=args.steps)}[attack]
                    crafted_on = surrogate if attack == "transfer" else backend
                    res = AudioPGDAttack(crafted_on, epsilon=eps, seed=args.seed, **settings).run(
                        clip, ex.question, target)
                    answer = res.answer if attack != "transfer" else backend.generate(ex.question, [[res.clip]])[0]
                    row = {"kind": kind, "attack": attack, "epsilon": eps, "target": target,
                           "undefended": target in answer, "answer": answer, "snr_db": res.snr_db,
                           "steps": res.steps, "seconds": res.elapsed, "on_surrogate": res.success}
                    for s in args.sigmas:
                        a, agr, n, sec = guarded(res.clip, ex.question, s, i)
                        row[f"s{s:g}"] = {"success": target in a, "agreement": agr}
                    record(key, stage="attack", **row)
                    print(f"{kind} {i} {attack} eps {eps:g}: {'success' if res.success else 'failed'} "
                          f"({res.steps} steps, SNR {res.snr_db:.1f} dB, {res.elapsed:.1f} s)", flush=True)
    out.close()


def _pct(values) -> str:
    values = list(values)
    return f"{100 * sum(values) / len(values):.0f}%" if values else "-"


def tables(records: list[dict], args: argparse.Namespace) -> str:
    from smoothguard.eval.metrics import agreement_detection

    sigmas = [f"{s:g}" for s in args.sigmas]
    kinds = ("count", "pitch", "yesno")
    util = [r for r in records if r["stage"] == "utility"]
    counts = ", ".join(f"{sum(r['kind'] == k for r in util)} {k}" for k in kinds)
    lines = [f"### Utility: greedy exact match, {len(util)} clean questions ({counts}), N = 11", "",
             "| kind | undefended | " + " | ".join(f"audio_sigma {s}" for s in sigmas) + " | adaptive 0.01 |",
             "|---|---|" + "---|" * len(sigmas) + "---|"]
    for k in (*kinds, "all"):
        rows = [r for r in util if k in ("all", r["kind"])]
        cells = [_pct(r["undefended"] for r in rows)] + [_pct(r[f"s{s}"]["correct"] for r in rows) for s in sigmas]
        cells.append(_pct(r["adaptive_0.01"]["correct"] for r in rows))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    clean = {r["key"].split("/", 1)[1]: r for r in records if r["stage"] == "clean"}
    attacks = [r for r in records if r["stage"] == "attack"]
    lines += ["", f"### Attack success, undefended and guarded ({len(clean)} questions answered right clean; "
              "success = the answer contains the target)", "",
              "| input | undefended | SNR dB (median) | " + " | ".join(f"audio_sigma {s}" for s in sigmas) + " |",
              "|---|---|---|" + "---|" * len(sigmas)]
    lines.append("| clean | 0% | - | " + " | ".join(_pct(c[f"s{s}"]["success"] for c in clean.values())
                                                  for s in sigmas) + " |")
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in attacks:
        groups.setdefault((r["attack"], r["epsilon"]), []).append(r)
    order = sorted(groups, key=lambda g: (ATTACKS.index(g[0]), g[1]))
    for g in order:
        rows = groups[g]
        snr = statistics.median(r["snr_db"] for r in rows)
        lines.append(f"| {g[0]}-eps{g[1]:g} | {_pct(r['undefended'] for r in rows)} | {snr:.1f} | "
                     + " | ".join(_pct(r[f"s{s}"]["success"] for r in rows) for s in sigmas) + " |")
    transfer = [r for r in attacks if r["attack"] == "transfer"]
    if transfer:
        lines += ["", "Transfer: the clips crafted on the surrogate reached the target on the surrogate itself for "
                  + ", ".join(f"{_pct(r['on_surrogate'] for r in transfer if r['epsilon'] == e)} (eps {e:g})"
                              for e in args.epsilons) + "."]
    present = [a for a in ATTACKS if any(g[0] == a for g in groups)]
    lines += ["", f"Per kind, undefended success ({' / '.join(present)}):", "",
              "| kind | " + " | ".join(f"eps {e:g}" for e in args.epsilons) + " |",
              "|---|" + "---|" * len(args.epsilons)]
    for k in kinds:
        cells = []
        for e in args.epsilons:
            cells.append(" / ".join(_pct(r["undefended"] for r in groups.get((a, e), []) if r["kind"] == k)
                                    for a in present))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "### Detection: AUC of 1 - agreement, attacked vs the same clips clean "
              "(false flags / attacked flagged at min_agreement 0.5)", "",
              "| input | " + " | ".join(f"audio_sigma {s}" for s in sigmas) + " |", "|---|" + "---|" * len(sigmas)]
    for g in order:
        rows = groups[g]
        cells = []
        for s in sigmas:
            c = [clean[r["key"].split("/", 3)[3]][f"s{s}"]["agreement"] for r in rows
                 if r["key"].split("/", 3)[3] in clean]
            a = [r[f"s{s}"]["agreement"] for r in rows]
            d = agreement_detection(c, a) if c and a else None
            cells.append(f"{d['auc']:.2f} ({d['false_flag_rate']:.0%} / {d['detection_rate']:.0%})" if d else "-")
        lines.append(f"| {g[0]}-eps{g[1]:g} | " + " | ".join(cells) + " |")
    lines += ["", "### Cost per clean question (2-core CPU, one torch thread, batched generate)", "",
              "| run | model calls | seconds |", "|---|---|---|"]
    if util:
        lines.append(f"| undefended | 1.00 | {statistics.mean(r['seconds_0'] for r in util):.3f} |")
        for key in [f"s{s}" for s in sigmas] + ["adaptive_0.01"]:
            lines.append(f"| {key.replace('s', 'audio_sigma ', 1) if key.startswith('s') else key} | "
                         f"{statistics.mean(r[key]['calls'] for r in util):.2f} | "
                         f"{statistics.mean(r[key]['seconds'] for r in util):.3f} |")
    lines += ["", "Seconds per attack (mean): " + ", ".join(
        f"{g[0]}-eps{g[1]:g} {statistics.mean(r['seconds'] for r in groups[g]):.1f}" for g in order)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
