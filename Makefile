# The two commands of the README. Each sets itself up (pinned venv, datasets) and is idempotent.
#   make book   executes the stale notebook templates into book/ (default CPU scale) and renders
#               the book into _build/html, warnings as errors
#   make test   runs every test: unit and property tests, then nbval over the book's notebooks
#               (the rendered pages' browser test is `make test-browser` until it passes)
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export PYTHONPATH := $(CURDIR)
ENV := tools/env.sh

.PHONY: book render test test-fast test-browser test-slurm test-variants env datasets screenshots clean bench

env:
	@$(ENV) >/dev/null

datasets:
	@tools/datasets.sh

book: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" tools/build_book.py

# render the executed pages in book/ as they are (a change to the configuration, CSS or a Markdown
# page), without re-executing stale notebooks
render: env
	@venv=$$($(ENV)); "$$venv/bin/python" tools/build_book.py --render-only

# every test: unit and property tests and nbval over the book's notebooks; then the book is built
# (stale notebooks executed, pages rendered with warnings as errors) and every rendered page is
# opened in headless Chromium at 1280 px and 400 px (tests/test_browser.py)
test: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" -m pytest -m "not browser" $(PYTEST_ARGS)
	@venv=$$($(ENV)); "$$venv/bin/python" tools/build_book.py && \
		"$$venv/bin/python" -m pytest tests/test_browser.py -m browser $(PYTEST_ARGS)

# every rendered page in headless Chromium at 1280 px and 400 px: overflowing math, tables and code,
# images without alt text, JavaScript errors (builds the book first when _build/html is missing)
test-browser: env
	@venv=$$($(ENV)); "$$venv/bin/python" -m pytest tests/test_browser.py $(PYTEST_ARGS)

# unit and property tests only (no notebooks)
test-fast: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" -m pytest tests -m "not browser" $(PYTEST_ARGS)

# the notebook regression tests under every CPU kernel path this machine has (ATEN_CPU_CAPABILITY)
# and with 1 and 2 threads: what another x86 machine would compute. VARIANTS overrides the list.
test-variants: env datasets
	@venv=$$($(ENV)); tools/test_variants.sh "$$venv/bin/python" $(VARIANTS)

# the SLURM launcher against a real one-node SLURM (tools/slurm-local.sh installs slurm-wlm and
# munge when root, starts the daemons and the test stops them): submit, scancel a task, resubmit
test-slurm: env datasets
	@venv=$$($(ENV)); "$$venv/bin/python" -m pytest tests/test_slurm.py $(PYTEST_ARGS)

# what each add-on costs on this machine (about 15 min on 2 CPU cores): side by side, printed and
# written to results/bench/<host kind>.json (BENCH_ARGS adds options, e.g. --device cuda)
bench: env
	@venv=$$($(ENV)); "$$venv/bin/python" -m feasible bench --threads 1 --rounds 3 --out auto $(BENCH_ARGS)

# headless Chromium screenshots of every rendered page, into _build/screenshots
screenshots:
	@tools/screenshots.sh

clean:
	rm -rf _build
