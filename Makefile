# The two commands of the README. Each sets itself up (pinned venv, datasets) and is idempotent.
#   make book   executes the stale notebook templates into book/ (default CPU scale) and renders
#               the book into _build/html, warnings as errors
#   make test   runs every test: unit and property tests, then nbval over the book's notebooks
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export PYTHONPATH := $(CURDIR)
ENV := tools/env.sh

.PHONY: book test test-fast test-variants env datasets screenshots clean

env:
	@$(ENV) >/dev/null

datasets:
	@tools/datasets.sh

book: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" tools/build_book.py

test: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" -m pytest $(PYTEST_ARGS)

# unit and property tests only (no notebooks)
test-fast: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" -m pytest tests $(PYTEST_ARGS)

# the notebook regression tests under every CPU kernel path this machine has (ATEN_CPU_CAPABILITY)
# and with 1 and 2 threads: what another x86 machine would compute. VARIANTS overrides the list.
test-variants: env datasets
	@venv=$$($(ENV)); tools/test_variants.sh "$$venv/bin/python" $(VARIANTS)

# headless Chromium screenshots of every rendered page, into _build/screenshots
screenshots:
	@tools/screenshots.sh

clean:
	rm -rf _build
