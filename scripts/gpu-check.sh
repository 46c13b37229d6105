#!/usr/bin/env bash
# make gpu-check: everything that needs a GPU, in one unattended run of at most 8 minutes on one GPU:
#   1. the GPU-marked tests (pytest -m gpu),
#   2. `ffmix bench e2e --device cuda`: images/s delivered into GPU memory, timm's PrefetchLoader +
#      FastCollateMixup beside ffmix,
#   3. Fashion-MNIST trained on the GPU to >= 94% test accuracy, with the seconds it took,
# then one summary table. Every result lands in one folder (GPU_CHECK_OUT, default gpu-check-out/DATE-HOST);
# each step has its own time limit (their sum stays under 8 minutes) and the exit status is non-zero when any
# step fails, times out or misses its goal. Without a GPU: one line on stderr and exit status 3.
#   scripts/gpu-check.sh            run it (after make setup: .venv with FFCV)
#   scripts/gpu-check.sh --offline  on a machine with no network, with its own python3 as it is: FFCV is built
#                                   first from the carried gpu-bundle/ (scripts/gpu-bundle.sh; docs/gpu.md),
#                                   ffmix comes from this checkout (a path entry), Fashion-MNIST from the
#                                   bundle; when $OUT is set, the summary and logs are copied there too
#   scripts/gpu-check.sh --dry-run  print the steps, their limits and the folder; run nothing (no GPU needed)
set -uo pipefail
cd "$(dirname "$0")/.."

offline=0 dry_run=0
for arg in "$@"; do
    case "$arg" in
        --offline) offline=1 ;;
        --dry-run) dry_run=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown option '$arg' (--offline, --dry-run)" >&2; exit 2 ;;
    esac
done

RESULTS=${GPU_CHECK_OUT:-gpu-check-out/$(date +%Y%m%d-%H%M%S)-$(hostname -s 2>/dev/null || echo host)}
STEPS=(tests data bench train)
# seconds per step: 90 + 40 + 200 + 140 = 470 s, under the 8 minutes with the GPU probe and the summary
declare -A LIMIT=([tests]=90 [data]=40 [bench]=200 [train]=140)
if ((offline)); then
    # The machine's python3 as it is; FFCV built into the results folder from the bundle, ffmix from here.
    PY=${PY:-python3}
    RESULTS=$(realpath -m "$RESULTS")   # the path entries written by the prepare step are absolute
    BUNDLE=${GPU_BUNDLE:-gpu-bundle}
    FMNIST=$BUNDLE/fashion-mnist
    DATA=$RESULTS/data           # converted afresh from the bundle's IDX files
    FFCV_DEST=$RESULTS/ffcv
    STEPS=(prepare tests data bench train)
    # the build (2-4 s there; 12 s at most per attempt before the next) and a cold `import ffcv` fit in
    # 45 s; 45 + 75 + 40 + 170 + 140 = 470 s
    LIMIT=([prepare]=45 [tests]=75 [data]=40 [bench]=170 [train]=140)
else
    PY=${PY:-.venv/bin/python}
    FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
    DATA=${DATA:-data}
fi

BENCH_PIPELINES=ffmix,ffmix_off,ffmix_uint8,ffcv_plain,timm_fast_collate,timm_mixup
declare -A COMMAND=(
    [prepare]="$PY scripts/ffcv_offline.py prepare --bundle ${BUNDLE:-} --dest ${FFCV_DEST:-} --attempt-limit 12"
    [tests]="$PY -m pytest -q -m gpu -p no:cacheprovider tests"
    [data]="mkdir -p $DATA && $PY -m ffmix.cli convert $FMNIST $DATA/fmnist-train.beton --format idx --split train --force && $PY -m ffmix.cli convert $FMNIST $DATA/fmnist-test.beton --format idx --split test --force"
    [bench]="$PY -m ffmix.cli bench e2e --device cuda --quiet --datasets rgb32,jpeg224 --pipelines $BENCH_PIPELINES --runs 3 --json $RESULTS/bench-e2e-cuda.json --work-dir $RESULTS/bench-data"
    [train]="$PY -m ffmix.cli train --train $DATA/fmnist-train.beton --val $DATA/fmnist-test.beton --device cuda --epochs 12 --mixup-alpha 0.2 --cutmix-alpha 1.0 --mix-off-epoch 11 --hflip --tta --out $RESULTS/train --overwrite"
)
# what comes back from a device run's $OUT: at most 8 files, so the summary, the build's record, the two
# results and one archive of the logs
KEPT=(summary.md summary.json ffcv/ffcv-build.log ffcv/ffcv-build.json bench-e2e-cuda.json train/metrics.jsonl)
need_data() { [ ! -f "$DATA/fmnist-train.beton" ] || [ ! -f "$DATA/fmnist-test.beton" ]; }

if ((offline)); then
    # After the prepare step: ffmix from this checkout, then FFCV (and a distutils stand-in where needed).
    offline_path() { echo "$PWD:$(cat "$FFCV_DEST/pythonpath" 2>/dev/null || echo "$FFCV_DEST/site")"; }
fi

if ((dry_run)); then
    echo "gpu-check --dry-run: results would go to $RESULTS"
    if ((offline)); then
        echo "  offline: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo 'not found')) as it is; bundle $BUNDLE$([ -f "$BUNDLE/MANIFEST" ] || echo ' (MISSING: make it with scripts/gpu-bundle.sh and carry it)')"
        echo "  gpu probe: $PY -c 'import torch; torch.cuda.is_available()' (exit 3 without a GPU)"
    fi
    for step in "${STEPS[@]}"; do
        if [ "$step" = data ] && ! need_data; then
            echo "  $step: skipped ($DATA/fmnist-*.beton exist)"
            continue
        fi
        echo "  $step (limit ${LIMIT[$step]} s): ${COMMAND[$step]}"
        if [ "$step" = prepare ]; then
            "$PY" scripts/ffcv_offline.py prepare --bundle "$BUNDLE" --dest "$FFCV_DEST" --dry-run | sed -n '2,$s/^/  /p'
            echo "  then, for every step below: PYTHONPATH=$PWD:$FFCV_DEST/site (and $FFCV_DEST/shim if distutils is missing)"
        fi
    done
    echo "  summary: $PY -m ffmix.bench.gpucheck $RESULTS"
    if ((offline)); then
        echo "  kept: ${KEPT[*]} and logs.tar.gz (every log and steps.tsv) -> ${OUT:-\$OUT}/gpu-check/$( [ -n "${OUT:-}" ] || echo ' (when OUT is set)')"
    fi
    exit 0
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); run it on a machine with one" >&2
    exit 3
fi
if ((offline)) && [ ! -f "$BUNDLE/MANIFEST" ]; then
    echo "gpu-check: no bundle at $BUNDLE (MANIFEST missing): make it with scripts/gpu-bundle.sh where there is network, and carry it (docs/gpu.md)" >&2
    exit 4
fi
if need_data && [ ! -d "$FMNIST" ]; then
    echo "gpu-check: Fashion-MNIST not found at $FMNIST (apt-get install dataset-fashion-mnist, or set FMNIST=DIR)" >&2
    exit 4
fi

mkdir -p "$RESULTS"
: > "$RESULTS/steps.tsv"
echo "gpu-check: results in $RESULTS"
for step in "${STEPS[@]}"; do
    if [ "$step" = data ] && ! need_data; then
        continue
    fi
    if ((offline)) && [ "$step" != prepare ]; then
        export PYTHONPATH; PYTHONPATH=$(offline_path)
        # ffmix's JPEG region decoder is compiled on first use against the bundle's libjpeg (ffmix/native)
        export FFMIX_JPEG_SYSROOT=$FFCV_DEST/sysroot
    fi
    echo "gpu-check: $step (at most ${LIMIT[$step]} s)"
    started=$(date +%s.%N)
    timeout --kill-after=10 "${LIMIT[$step]}" bash -c "${COMMAND[$step]}" > "$RESULTS/$step.log" 2>&1
    rc=$?
    elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\n' "$step" "$rc" "$elapsed" >> "$RESULTS/steps.tsv"
    if [ "$rc" -ne 0 ]; then
        echo "gpu-check: $step FAILED (exit $rc); the last lines of $RESULTS/$step.log:" >&2
        tail -n 15 "$RESULTS/$step.log" >&2
    fi
    if [ "$step" = prepare ] && [ "$rc" -ne 0 ]; then
        echo "gpu-check: FFCV could not be made from the bundle; the other steps need it (see $FFCV_DEST/ffcv-build.log)" >&2
        break
    fi
done
# offline, the summary needs only ffmix's own modules (no FFCV, no numpy): it runs even when prepare failed
if ((offline)); then
    PYTHONPATH=$PWD "$PY" -m ffmix.bench.gpucheck "$RESULTS"
else
    "$PY" -m ffmix.bench.gpucheck "$RESULTS"
fi
verdict=$?
if ((offline)) && [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/gpu-check"
    for kept in "${KEPT[@]}"; do
        flat=${kept#ffcv/}   # one folder down, as the device tool brings files back
        [ ! -f "$RESULTS/$kept" ] || cp "$RESULTS/$kept" "$OUT/gpu-check/${flat//\//-}"
    done
    (cd "$RESULTS" && find . -maxdepth 2 \( -name '*.log' -o -name steps.tsv \) -print0 | tar -czf "$OUT/gpu-check/logs.tar.gz" --null -T -)
    echo "gpu-check: the summary and logs are also in $OUT/gpu-check"
fi
exit $verdict
