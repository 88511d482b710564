# Two entry points: `make run` (set up, run the main job) and `make test` (set up, run the tests).
# `make run` uses the lean install (.venv-lean: `pip install -e .`, no torch; LEAN_EXTRA=pkg adds
# packages), `make test` everything (.venv: torch, then `-e .[test]`). The two venvs are independent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LEAN := .venv-lean
LEAN_STAMP := $(LEAN)/.installed
LEAN_EXTRA ?=

.PHONY: run test install install-lean web profile clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

$(LEAN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(LEAN)
	$(LEAN)/bin/python -m pip install -q -e . $(LEAN_EXTRA)
	touch $(LEAN_STAMP)

install: $(STAMP)
install-lean: $(LEAN_STAMP)

# The page's front-end files (onnxruntime-web, opencv.js, Swagger UI) from npm, copied into an
# ignored folder that `litefer serve` serves; rerun when web/package*.json change.
WEB_STAMP := src/litefer/serve/static/vendor/manifest.json
web: $(WEB_STAMP)
$(WEB_STAMP): web/package.json web/package-lock.json web/vendor.mjs
	cd web && npm ci --no-audit --no-fund --loglevel=error
	node web/vendor.mjs

# the packaged ONNX model through ONNX Runtime: no torch. The YuNet face detector is fetched once when
# online (it is not ours to ship); offline, predict carries on with the built-in Haar detector and says so.
run: $(LEAN_STAMP)
	@$(LEAN)/bin/litefer fetch yunet --timeout 20 || echo "make run: YuNet not fetched (offline?); carrying on with the Haar detector"
	$(LEAN)/bin/litefer predict --sample --scores --save-annotated out/demo --csv out/demo/astronaut.csv

test: $(STAMP) web
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(LEAN) build dist src/*.egg-info .pytest_cache web/node_modules src/litefer/serve/static/vendor
