# The README's two commands are `make demo` and `make test`; both set everything up first.
PY := .venv/bin/python
DATA := data
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo compare test bench gpu-check gpu-check-offline gpu-bundle data clean

setup:
	@bash scripts/setup.sh

# Fashion-MNIST from Debian's dataset-fashion-mnist package, converted once.
data: setup $(DATA)/fmnist-train.beton $(DATA)/fmnist-test.beton

$(DATA)/fmnist-%.beton:
	@mkdir -p $(DATA)
	$(PY) -m ffmix.cli convert $(FMNIST) $@ --format idx --split $* --force

# Fashion-MNIST on the CPU with MixUp + CutMix (mixing off for the last two epochs, a common recipe; flips
# in training and at test time), then the test accuracy: 92.99% after 123 s of training on a 2-core AMD EPYC
# (2026-12-02; 93.04% after 258-310 s on a slower one, docs/train.md). The default width (48) reaches 93.58% in
# 10 epochs but takes over twice as long. The quick bench is its end-to-end part (the whole quick bench adds a
# minute).
# runs/demo is replaced on each run.
DEMO_RECIPE := --train $(DATA)/fmnist-train.beton --val $(DATA)/fmnist-test.beton --width 24 \
	--epochs 11 --mixup-alpha 0.2 --cutmix-alpha 1.0 --mix-off-epoch 10 --hflip --tta

demo: data
	$(PY) -m ffmix.cli bench e2e --quick
	$(PY) -m ffmix.cli train $(DEMO_RECIPE) --out runs/demo --overwrite
	@$(PY) -c 'import json; r = json.loads(open("runs/demo/metrics.jsonl").readlines()[-1]); \
		print("Fashion-MNIST test accuracy: %.2f%% after %d epochs, %.0f s" % (100 * r["val_acc"], r["epoch"], r["elapsed"]))'

# The demo recipe twice, with mixing on and off, and one table of accuracy, test NLL, calibration error (ECE),
# time, images/s and data wait (runs/compare/compare.md). Twice the demo's training time.
compare: data
	$(PY) -m ffmix.cli train $(DEMO_RECIPE) --compare-mixing --out runs/compare --overwrite

# The suite on every core (pytest-xdist): about five and a half minutes on 2 cores once set up.
test: setup
	$(PY) -m pytest -q -n auto

# All sections (a few minutes); the generated datasets are kept in bench-out/data for the next run.
bench: data
	$(PY) -m ffmix.cli bench --fmnist $(FMNIST) --work-dir bench-out/data --json bench-out/bench.json \
		--plot bench-out/bench.png

# On a machine with one GPU: GPU tests, `ffmix bench e2e --device cuda`, Fashion-MNIST trained to >= 94%, one
# summary table; at most 8 minutes, results in gpu-check-out/DATE-HOST (scripts/gpu-check.sh --dry-run shows the steps).
gpu-check: setup
	@bash scripts/gpu-check.sh

# The same check on a GPU machine with no network and its own python3 (no setup: nothing is installed): FFCV
# is built from the carried gpu-bundle/, ffmix runs from this checkout (docs/gpu.md).
gpu-check-offline:
	@bash scripts/gpu-check.sh --offline

# gpu-bundle/ (ignored, <= 50 MiB): what gpu-check-offline needs from outside the checkout; needs network.
gpu-bundle:
	@bash scripts/gpu-bundle.sh

clean:
	rm -rf runs bench-out gpu-check-out .pytest_cache
