# The two commands of the README: `make demo` (set up, run the main job) and `make test`
# (set up, run the test suite but the tests marked slow; `make test-all` runs those too).
.PHONY: setup demo test test-all lint

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

test: setup
	./scripts/test.sh

test-all: setup
	./scripts/test.sh -m ''

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
