# The front door. `make` (or `make help`) lists every target. `make demo` and `make test` build the
# virtual environment themselves the first time (and again only when the dependency files change).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
# A wheel index for torch/torchvision, e.g. a CUDA-12 build for V100 servers (README, "V100").
TORCH_INDEX ?=
ASSIGNMENT ?= week01_gan_foundations
PYTEST_ARGS ?=
# `make lock`: more pip-compile options, e.g. --upgrade (everything) or --upgrade-package torch.
LOCK_ARGS ?=
# `make autograde`: options of `gankit grade` (--workers N, --gpus all|none|0,1, --scheduler ADDR, --student ID, --force).
GRADE_ARGS ?=
# `make zip_collect`: the archives downloaded from the LMS.
ARCHIVES ?=
# `make clean-runtime`: CONFIRM=yes, or nothing is deleted (runtime/ holds the gradebook and students' work).
CONFIRM ?=
# `make student-copy`: the folder (a git repository) of what students clone; outside this repository.
DEST ?=
# `make lab`: whose server (student or instructor), and more options for it (e.g. --student ID --port N).
ROLE ?= student
LAB_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# Tools run from the venv find its kernel and console scripts first.
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND ?= Agg
# pip prints one warning per package for this machine's optional local mirrors; they are noise.
# sed (unlike grep -v) exits 0 on empty output, so with pipefail a failing pip still fails the target.
PIP_QUIET := sed '/is ignored: it is neither a file nor a directory/d'
CONSTRAINT_FLAG := $(if $(strip $(CONSTRAINTS)),-c $(CONSTRAINTS),)

.PHONY: exchange-server help setup system-packages demo test test-fast test-browser lint lab data syllabus doctor generate release \
        collect zip_collect autograde feedback grades bench strip lock clean clean-venv clean-runtime clean-all \
        student-copy

help: ## List every target with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  Variables: ASSIGNMENT=$(ASSIGNMENT)  ROLE=$(ROLE)  PYTHON=$(PYTHON)  TORCH_INDEX=<wheel index for torch>  CONSTRAINTS=$(CONSTRAINTS)"

setup: system-packages $(STAMP) ## Build .venv with the tested versions (reruns only when dependency files change)

system-packages: ## Install bubblewrap, Chromium, PostgreSQL when root with apt-get; otherwise say what is missing
	@.ci/system-packages

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the kit into $(VENV) (first time: a few minutes, torch is large)"
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(PIP_QUIET)
	$(if $(strip $(TORCH_INDEX)),$(BIN)/python -m pip install -q $(CONSTRAINT_FLAG) --index-url $(TORCH_INDEX) torch torchvision 2>&1 | $(PIP_QUIET))
	$(BIN)/python -m pip install -q $(CONSTRAINT_FLAG) -e '.[dev]' 2>&1 | $(PIP_QUIET)
	$(BIN)/python -c "import torch, torchvision, nbgrader, papermill, gankit; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| nbgrader', nbgrader.__version__, '| papermill', papermill.__version__)"
	@touch $@

demo: setup ## The whole pipeline on embedded data: generate, release, submit, collect, autograde, feedback, grades
	$(BIN)/python -m grading demo

test: lint ## Lint, then run the whole test suite (what CI runs)
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$status

lint: setup ## ruff on the Python sources (settings in pyproject.toml); the first step of make test
	$(BIN)/ruff check --quiet .

test-fast: setup ## Tests without notebook execution and the end-to-end grading runs
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-browser: setup ## Only the browser test: a student submits week 1 in JupyterLab (headless Chromium)
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$status

lab: setup ## JupyterLab with the course built in: ROLE=student (assignments, validate) or ROLE=instructor (+ formgrader)
	$(BIN)/python -m grading.lab --role $(ROLE) $(LAB_ARGS)

data: setup ## Build the embedded (synthetic) datasets under the runtime folder
	$(BIN)/python -m grading data

syllabus: setup ## Regenerate course/SYLLABUS.md from course/course.yml
	$(BIN)/python -m grading syllabus

doctor: setup ## Check this machine: GPU, driver, torch build, disk, memory, data, exchange, bubblewrap
	$(BIN)/gankit doctor

generate: setup ## Instructor: build the student version of ASSIGNMENT from assignments/
	$(BIN)/python -m grading generate $(ASSIGNMENT)

release: setup ## Instructor: release ASSIGNMENT to the exchange
	$(BIN)/python -m grading release $(ASSIGNMENT)

collect: setup ## Instructor: collect submissions of ASSIGNMENT from the exchange
	$(BIN)/python -m grading collect $(ASSIGNMENT)

zip_collect: setup ## Instructor: collect ASSIGNMENT from LMS archives (ARCHIVES="submissions.zip ...")
	$(BIN)/python -m grading zip_collect $(ASSIGNMENT) $(ARCHIVES)

autograde: setup ## TA: grade every collected submission of ASSIGNMENT in parallel, resumable (GRADE_ARGS="--workers 4 --gpus 0,1")
	$(BIN)/gankit grade $(ASSIGNMENT) $(GRADE_ARGS)

feedback: setup ## Instructor: generate and release feedback for ASSIGNMENT
	$(BIN)/python -m grading feedback $(ASSIGNMENT)

grades: setup ## Instructor: export grades (CSV under the runtime folder) and print the table
	$(BIN)/python -m grading grades

exchange-server: setup ## Instructor: serve the exchange over HTTP to students' servers with no shared folder (LISTEN=127.0.0.1:8765)
	$(BIN)/python -m grading exchange serve $(if $(LISTEN),--listen $(LISTEN))

bench: setup ## Benchmarks, each printing ratios measured side by side (Trainer, CycleGAN, StarGAN, codec, grading)
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/cyclegan_train_step.py
	$(BIN)/python benchmarks/stargan_train_step.py
	$(BIN)/python benchmarks/compression.py
	$(BIN)/python benchmarks/grading.py

strip: setup ## Strip outputs from every notebook (keeps nbgrader metadata)
	git ls-files '*.ipynb' | xargs -r $(BIN)/nbstripout --keep-id

lock: setup ## Resolve pyproject.toml (+ dev) into constraints.txt with pip-compile, keeping pins that still fit
	@test -n "$(strip $(CONSTRAINTS))" || { echo "make lock writes CONSTRAINTS: set it to a file"; exit 1; }
	@# pip-compile starts from the pins already in its output file, so copy the current ones there.
	cp $(CONSTRAINTS) $(CONSTRAINTS).new
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-header --no-annotate --no-emit-index-url \
	    --no-emit-find-links $(LOCK_ARGS) --output-file $(CONSTRAINTS).new pyproject.toml \
	    || { rm -f $(CONSTRAINTS).new; exit 1; }
	@# The header stays; torch's CUDA runtime (nvidia-*, cuda-*, triton) is left to torch's own pins,
	@# so that a CUDA-12 build (TORCH_INDEX) installs with the same file.
	{ grep '^#' $(CONSTRAINTS); grep -Evi '^(#|$$|nvidia-|cuda-|triton==)' $(CONSTRAINTS).new; } > $(CONSTRAINTS).tmp
	rm $(CONSTRAINTS).new && mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@echo "$(CONSTRAINTS) resolved: review git diff $(CONSTRAINTS), then make test"

clean: ## Remove caches and test output only (never runtime/'s course data or students' work)
	rm -rf .pytest_cache .ruff_cache build dist runtime/test-output
	find . \( -path ./.venv -o -path ./runtime -o -path ./.git \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

clean-venv: ## Remove only the virtual environment; `make clean-venv setup` rebuilds it (e.g. with TORCH_INDEX)
	rm -rf $(VENV)

clean-all: clean clean-venv ## clean + clean-venv; runtime/ stays (that is clean-runtime CONFIRM=yes)

clean-runtime: ## DELETE runtime/ (releases, submissions, gradebook, students' work): only with CONFIRM=yes
ifeq ($(CONFIRM),yes)
	rm -rf runtime
	@echo "removed runtime/ (releases, submissions, gradebook, feedback, students' folders)"
else
	@echo "make clean-runtime deletes runtime/: releases, submissions, the gradebook and students' work in runtime/students/;" \
	      "nothing was removed. To really delete it: make clean-runtime CONFIRM=yes"; exit 2
endif

student-copy: setup ## Instructor: write what students clone into DEST (a git repo, one commit per run, scanned: no solutions)
	@test -n "$(strip $(DEST))" || { echo "make student-copy needs DEST=<folder outside this repository>, e.g. DEST=../gan-course-student"; exit 2; }
	$(BIN)/python -m grading student_copy $(DEST)
