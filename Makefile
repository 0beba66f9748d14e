# Two commands for a fresh machine (see README.rst):
#   make demo   set up a virtual environment and run the demo against the embedded simulators
#   make test   set up a fresh virtual environment and run lint, type checks and the test suite
#   make bench  the benchmark scripts, each printing its tables (ARGS=--quick: a smoke run)
PYTHON ?= python3
VENV ?= .venv

.PHONY: demo test bench

$(VENV)/bin/puffin-trio: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/bin/puffin-trio
	$(VENV)/bin/puffin-trio demo $(ARGS)

test:
	bash .ci/run

bench: $(VENV)/bin/puffin-trio
	$(VENV)/bin/python benchmarks/bench_core.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_throughput.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_decode.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_latency.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_rss.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_redis.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_recording.py $(ARGS)
	$(VENV)/bin/python benchmarks/bench_backfill.py $(ARGS)
