# The two commands of the README: `make demo` (set up, run the main job) and `make test`
# (set up, run the whole test suite).
.PHONY: setup demo test test-fast lint

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

test: setup
	./scripts/test.sh -m ''

test-fast: setup
	./scripts/test.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
