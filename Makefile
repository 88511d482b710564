# Two entry points: `make run` (set up, run the main job) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install web profile clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The page's front-end files (onnxruntime-web, opencv.js, Swagger UI) from npm, copied into an
# ignored folder that `litefer serve` serves; rerun when web/package*.json change.
WEB_STAMP := src/litefer/serve/static/vendor/manifest.json
web: $(WEB_STAMP)
$(WEB_STAMP): web/package.json web/package-lock.json web/vendor.mjs
	cd web && npm ci --no-audit --no-fund --loglevel=error
	node web/vendor.mjs

run: $(STAMP)
	$(VENV)/bin/litefer predict --sample --scores --save-annotated out/demo --csv out/demo/astronaut.csv

test: $(STAMP) web
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache web/node_modules src/litefer/serve/static/vendor
