#!/usr/bin/env bash
# make gpu-check: everything that needs a GPU, in one unattended run of at most 8 minutes on one GPU:
#   1. the GPU-marked tests (pytest -m gpu),
#   2. `ffmix bench e2e --device cuda`: images/s delivered into GPU memory, timm's PrefetchLoader +
#      FastCollateMixup beside ffmix,
#   3. Fashion-MNIST trained on the GPU to >= 94% test accuracy, with the seconds it took,
# then one summary table. Every result lands in one folder (GPU_CHECK_OUT, default gpu-check-out/DATE-HOST);
# each step has its own time limit (their sum stays under 8 minutes) and the exit status is non-zero when any
# step fails, times out or misses its goal. Without a GPU: one line on stderr and exit status 3.
#   scripts/gpu-check.sh            run it
#   scripts/gpu-check.sh --dry-run  print the steps, their limits and the folder; run nothing (no GPU needed)
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
DATA=${DATA:-data}
OUT=${GPU_CHECK_OUT:-gpu-check-out/$(date +%Y%m%d-%H%M%S)-$(hostname -s 2>/dev/null || echo host)}
# seconds per step: 90 + 40 + 200 + 140 = 470 s, under the 8 minutes with the GPU probe and the summary
LIMIT_TESTS=90 LIMIT_DATA=40 LIMIT_BENCH=200 LIMIT_TRAIN=140

dry_run=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown option '$arg' (only --dry-run)" >&2; exit 2 ;;
    esac
done

BENCH_PIPELINES=ffmix,ffmix_off,ffmix_uint8,ffcv_plain,timm_fast_collate,timm_mixup
STEPS=(tests data bench train)
declare -A LIMIT=([tests]=$LIMIT_TESTS [data]=$LIMIT_DATA [bench]=$LIMIT_BENCH [train]=$LIMIT_TRAIN)
declare -A COMMAND=(
    [tests]="$PY -m pytest -q -m gpu -p no:cacheprovider tests"
    [data]="$PY -m ffmix.cli convert $FMNIST $DATA/fmnist-train.beton --format idx --split train --force && $PY -m ffmix.cli convert $FMNIST $DATA/fmnist-test.beton --format idx --split test --force"
    [bench]="$PY -m ffmix.cli bench e2e --device cuda --quiet --datasets rgb32,jpeg224 --pipelines $BENCH_PIPELINES --runs 3 --json $OUT/bench-e2e-cuda.json --work-dir $OUT/bench-data"
    [train]="$PY -m ffmix.cli train --train $DATA/fmnist-train.beton --val $DATA/fmnist-test.beton --device cuda --epochs 12 --mixup-alpha 0.2 --cutmix-alpha 1.0 --mix-off-epoch 11 --hflip --tta --out $OUT/train --overwrite"
)
need_data() { [ ! -f "$DATA/fmnist-train.beton" ] || [ ! -f "$DATA/fmnist-test.beton" ]; }

if ((dry_run)); then
    echo "gpu-check --dry-run: results would go to $OUT"
    for step in "${STEPS[@]}"; do
        if [ "$step" = data ] && ! need_data; then
            echo "  $step: skipped ($DATA/fmnist-*.beton exist)"
            continue
        fi
        echo "  $step (limit ${LIMIT[$step]} s): ${COMMAND[$step]}"
    done
    echo "  summary: $PY -m ffmix.bench.gpucheck $OUT"
    exit 0
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); run it on a machine with one" >&2
    exit 3
fi
if need_data && [ ! -d "$FMNIST" ]; then
    echo "gpu-check: Fashion-MNIST not found at $FMNIST (apt-get install dataset-fashion-mnist, or set FMNIST=DIR)" >&2
    exit 4
fi

mkdir -p "$OUT"
: > "$OUT/steps.tsv"
echo "gpu-check: results in $OUT"
for step in "${STEPS[@]}"; do
    if [ "$step" = data ] && ! need_data; then
        continue
    fi
    echo "gpu-check: $step (at most ${LIMIT[$step]} s)"
    started=$(date +%s.%N)
    timeout --kill-after=10 "${LIMIT[$step]}" bash -c "${COMMAND[$step]}" > "$OUT/$step.log" 2>&1
    rc=$?
    elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\n' "$step" "$rc" "$elapsed" >> "$OUT/steps.tsv"
    if [ "$rc" -ne 0 ]; then
        echo "gpu-check: $step FAILED (exit $rc); the last lines of $OUT/$step.log:" >&2
        tail -n 15 "$OUT/$step.log" >&2
    fi
done
"$PY" -m ffmix.bench.gpucheck "$OUT"
