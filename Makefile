# The course's commands. `make` alone lists them.
# Everything runs inside .venv, created on first use and reused afterwards.

PYTHON   ?= python3
# The interpreter behind $(PYTHON); pyenv's shims answer `python3.12` only for the active version, so fall back
# to pyenv's own copy of that version (e.g. `make test PYTHON=python3.12` on a machine with several Pythons).
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	ls -d "$$(pyenv root 2>/dev/null)"/versions/$(patsubst python%,%,$(PYTHON))*/bin/$(PYTHON) 2>/dev/null | tail -n 1)
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
PROFILE  ?= quick
# Optional papermill parameters, passed through only when set.
DEVICE   ?=
DATASET  ?=
# A space-separated subset of notebooks (paths or name fragments); empty = the whole course.
NOTEBOOKS ?=
# Instructors: `make release` writes the students' edition (REPO: the students' repository, owner/name);
# `make grade SUBMISSIONS=dir` grades what came back into GRADES (LAB: grade every notebook as this lab).
REPO        ?=
SUBMISSIONS ?=
GRADES      ?= grades
LAB         ?=
# The practice project's web app (make app): its port; Chromium drives it in tests/test_app_browser.py.
PORT     ?= 7860
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

# The venv's tools first on PATH, so the `python3` kernel is the venv's Python.
export PATH := $(abspath $(BIN)):$(PATH)
# Nobody watches a headless kernel: progress bars stay out of stored and checked outputs.
export TQDM_DISABLE := 1
export PYTHONHASHSEED := 0

RUN_ARGS = --profile $(PROFILE) $(if $(DEVICE),--device $(DEVICE)) $(if $(DATASET),--dataset $(DATASET)) $(NOTEBOOKS)

.DEFAULT_GOAL := help
.PHONY: help setup doctor lab test unit execute-all refresh checkpoints lint clean app browser devices release grade

help: ## list the targets
	@echo "Attention & Vision Transformer labs. Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables: PROFILE=quick|full  DEVICE=cpu|cuda|mps  DATASET=...  NOTEBOOKS='week6/01 ...'"
	@echo "Instructors: make release REPO=owner/name; make grade SUBMISSIONS=dir [GRADES=grades] [LAB=6.1]"

$(STAMP): requirements.txt requirements-dev.txt requirements-app.txt pyproject.toml
	@test -n "$(PYTHON_EXE)" || { echo "$(PYTHON) not found: install it or pass PYTHON=python3.11 (or 3.12)" >&2; exit 1; }
	$(PYTHON_EXE) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(STAMP) ## create/refresh the .venv (idempotent)

doctor: $(STAMP) ## the environment report: versions, device, memory, network, which profiles suit this machine
	$(BIN)/python -m common.doctor

lab: $(STAMP) ## open JupyterLab on the course (step through the notebooks locally)
	@# as root (containers, cloud VMs) JupyterLab refuses to start without --allow-root
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

test: $(STAMP) browser ## unit tests, notebook structure checks, then nbval over the committed notebooks
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider \
		--nbval-sanitize-with .nbval-sanitize.cfg $$($(BIN)/python -m scripts.course_notebooks $(NOTEBOOKS))

unit: $(STAMP) browser ## only the unit and structure tests (with the app's browser test)
	$(BIN)/python -m pytest tests

execute-all: $(STAMP) ## run every notebook with papermill into outputs/executed/ (PROFILE=quick|full)
	$(BIN)/python -m scripts.execute_notebooks $(RUN_ARGS)

refresh: $(STAMP) ## re-execute notebooks in place (default parameters) to refresh their committed outputs
	$(BIN)/python -m scripts.execute_notebooks --in-place $(NOTEBOOKS)

checkpoints: $(STAMP) ## retrain the course's reference models into checkpoints/ (2-core CPU: about 2 h)
	@# how the committed checkpoints were made (times in the manifest): one after the other, since DINO's
	@# multi-crop augmentation runs in a worker process on the second core
	$(BIN)/python -m scripts.train_checkpoints vit --threads 1
	$(BIN)/python -m scripts.train_checkpoints dino --threads 1 --workers 1
	$(BIN)/python -m scripts.train_checkpoints dino_supervised --threads 1
	$(BIN)/python -m scripts.train_checkpoints date_transformer --threads 1

devices: $(STAMP) ## every notebook's code on an emulated accelerator: CPU tensors meeting device tensors fail (no GPU needed)
	$(BIN)/python -m scripts.check_devices $(NOTEBOOKS)

release: $(STAMP) ## instructors: the students' edition in release/ (no solutions, no grading cases; REPO=owner/name)
	$(BIN)/python -m scripts.release $(if $(REPO),--repo $(REPO))

grade: $(STAMP) ## instructors: grade SUBMISSIONS=dir (one folder per student) into grades/grades.csv and feedback
	@test -n "$(SUBMISSIONS)" || { echo "give the submissions: make grade SUBMISSIONS=path/to/folder (one folder per student)" >&2; exit 2; }
	$(BIN)/python -m scripts.grade "$(SUBMISSIONS)" --out "$(GRADES)" $(if $(LAB),--lab $(LAB))

gpu-check: $(STAMP) ## on a GPU: every quick profile with DEVICE=cuda and lab 4.5's GPU-only paths (<= 8 min), report in outputs/gpu_check.md
	$(BIN)/python -m scripts.gpu_check $(NOTEBOOKS)

lint: $(STAMP) ## ruff over the package, tests, scripts, notebooks and the app
	$(BIN)/ruff check common tests scripts week6 week4 app
	$(BIN)/ruff format --check common tests scripts app

app: $(STAMP) ## the practice project's web app on http://127.0.0.1:7860 (PORT=... to change; works offline)
	$(BIN)/python app/app.py --port $(PORT)

browser: ## Debian's Chromium for the app's browser test: installed with apt-get (as root) when missing
ifeq ($(SKIP_BROWSER_TEST),1)
	@echo "SKIP_BROWSER_TEST=1: Chromium not checked; tests/test_app_browser.py is skipped on purpose."
else
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium (and fonts-nanum for Korean text) for tests/test_app_browser.py"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-nanum; \
	else \
		echo "Chromium is missing ($(CHROMIUM)); tests/test_app_browser.py needs it. As root run:" >&2; \
		echo "  apt-get update && apt-get install -y chromium fonts-nanum" >&2; \
		echo "(or SKIP_BROWSER_TEST=1 to skip that test explicitly)" >&2; exit 1; \
	fi
endif

clean: ## remove generated outputs, the students' edition and caches (keeps .venv and grades/)
	rm -rf outputs/executed outputs/week4 outputs/week6 outputs/checkpoints release .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
