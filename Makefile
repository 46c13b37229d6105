# The README's two commands are `make demo` and `make test`; both set everything up first.
PY := .venv/bin/python
DATA := data
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test bench data clean

setup:
	@bash scripts/setup.sh

# Fashion-MNIST from Debian's dataset-fashion-mnist package, converted once.
data: setup $(DATA)/fmnist-train.beton $(DATA)/fmnist-test.beton

$(DATA)/fmnist-%.beton:
	@mkdir -p $(DATA)
	$(PY) -m ffmix.cli convert $(FMNIST) $@ --format idx --split $* --force

demo: data
	$(PY) -m ffmix.cli bench --quick
	$(PY) -m ffmix.cli train --train $(DATA)/fmnist-train.beton --val $(DATA)/fmnist-test.beton \
		--mixup-alpha 0.2 --cutmix-alpha 1.0 --out runs/demo

test: setup
	$(PY) -m pytest -q

bench: data
	$(PY) -m ffmix.cli bench --json bench-out/bench.json --plot bench-out/bench.png

clean:
	rm -rf runs bench-out .pytest_cache
