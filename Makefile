# The two commands the README starts with. Each prepares what it needs (scripts/bootstrap.sh) and is safe to repeat.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help bootstrap demo test unit sanity lint integration benchmark clean

help:
	@echo "make demo   - run the main job locally (no AWS account needed)"
	@echo "make test   - unit tests, Python 3.9 checks, ansible-test sanity, ansible-lint, integration tests"

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

test: bootstrap
	@scripts/test.sh all

unit sanity lint integration: bootstrap
	@scripts/test.sh $@

benchmark: bootstrap
	@for b in benchmarks/*.py; do echo "== $$b"; .venv/bin/python "$$b" || exit 1; done

clean:
	rm -rf .build .cache
