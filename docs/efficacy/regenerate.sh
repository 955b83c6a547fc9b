#!/usr/bin/env bash
# Regenerates every table and figure of docs/efficacy.md on the shipped testbed (CPU is enough: about 40 minutes
# on 2 cores, most of it crafting the attacks). From the repository root, with the package installed
# (`make test` builds .venv; or pip install -e '.[all]'). Runs are resumable: rerun after a kill.
#   WORK   where the datasets and raw runs go (default runs/efficacy)
#   QUESTIONS, EOT_SAMPLES, EOT_STEPS   the attack study's budget (defaults 50, 4, 50)
set -euo pipefail
cd "$(dirname "$0")/../.."
SG="${SG:-.venv/bin/smoothguard}"
[ -x "$SG" ] || SG=smoothguard
WORK="${WORK:-runs/efficacy}"
DOCS=docs/efficacy
SIGMAS="0.05 0.1 0.15 0.2 0.3"

"$SG" eval make-data "$WORK/data" --pope-images 50 --llavabench 60 --seed 0
"$SG" eval pope --model testbed --data "$WORK/data/pope" --sigma 0 $SIGMAS --n-samples 11 --seed 0 \
    --out "$WORK/pope" --no-progress > /dev/null
"$SG" eval pope --model testbed --data "$WORK/data/pope" --sigma 0.1 0.2 --n-samples 11 --adaptive --seed 0 \
    --out "$WORK/pope-adaptive" --no-progress > /dev/null
"$SG" eval llavabench --model testbed --data "$WORK/data/llavabench" --judge overlap --sigma 0 $SIGMAS \
    --n-samples 11 --seed 0 --out "$WORK/llavabench" --no-progress > /dev/null
"$SG" eval report "$WORK/pope" "$WORK/pope-adaptive" "$WORK/llavabench" --out "$DOCS/utility" \
    --title "testbed: utility vs sigma"
"$SG" eval attacks --model testbed --surrogate testbed:surrogate --data "$WORK/data/pope" \
    --questions "${QUESTIONS:-50}" --sigma $SIGMAS --eot-samples "${EOT_SAMPLES:-4}" --eot-steps "${EOT_STEPS:-50}" \
    --seed 0 --out "$WORK/attacks" --no-progress > /dev/null
mkdir -p "$DOCS/attacks"
cp "$WORK/attacks/study.md" "$WORK/attacks/study.json" "$WORK"/attacks/*.png "$DOCS/attacks/"
echo "wrote $DOCS/utility/ and $DOCS/attacks/; paste their tables into docs/efficacy.md"
# section 6: the attacked inputs as 256 and 512 px uploads, noise at the source vs the model's size (about 10 minutes)
PY="${PY:-.venv/bin/python}"; [ -x "$PY" ] || PY=python
"$PY" docs/efficacy/real_sizes/run.py --questions 50 --work "$WORK/real_sizes" > /dev/null
"$PY" docs/efficacy/real_sizes/run.py --questions 50 --sigmas 0.025 0.04 --work "$WORK/real_sizes" > /dev/null
