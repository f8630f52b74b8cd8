# Two commands on a fresh machine:
#   make run   - set everything up, generate sample data (scale s) and run the pipeline
#   make test  - set everything up and run the test suite
# Set-up = a virtual environment in .venv with the pinned packages of pyproject.toml
# (constrained by requirements.lock) and Delta's jars from Maven Central in .jars/.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
JARS := .jars/.fetched
SCALE ?= s

.PHONY: setup venv jars run test lint clean help mlflow-ui faults bench

help:
	@echo "make run    - set up, generate scale $(SCALE) data and run the whole pipeline"
	@echo "make test   - set up and run the test suite"
	@echo "make jars   - fetch Delta's jars from Maven Central into .jars/"
	@echo "make lint   - ruff"
	@echo "make bench  - every benchmark, one summary table in data/bench/summary.md (long)"
	@echo "make faults - the whole fault-injection suite (crashes, concurrency, hostile input) and its summary"
	@echo "make mlflow-ui [PORT=5000] - MLflow UI on the local store at http://127.0.0.1:PORT"

setup: $(INSTALLED) $(JARS)

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	@touch $@

jars: $(JARS)

$(JARS): jars/pom.xml
	@command -v java >/dev/null || { echo "error: java not found: install a Java 17 JDK (Spark needs it)"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found: install Maven, or copy delta-spark_4.2_2.13 and delta-storage jars into .jars/"; exit 1; }
	@rm -rf .jars && mkdir -p .jars
	@mvn -q -B -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars \
	  || { echo "error: could not fetch Delta's jars from Maven Central: check network access to it (or a mirror in ~/.m2/settings.xml) and run make jars again"; exit 1; }
	@touch $@
	@ls .jars

run: setup
	$(BIN)/lakehouse generate --scale $(SCALE)
	$(BIN)/lakehouse run all

test: setup
	$(BIN)/ruff check lakehouse ml jobs tests scripts
	$(BIN)/pytest -q

bench: setup
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,bench]'
	$(BIN)/python scripts/bench_all.py

faults: setup
	@mkdir -p data/faults && rm -f data/faults/report.jsonl
	-LAKEHOUSE_FAULTS=full LAKEHOUSE_FAULTS_REPORT=$(CURDIR)/data/faults/report.jsonl \
	  $(BIN)/pytest -q tests/faults
	$(BIN)/python scripts/faults_summary.py data/faults/report.jsonl --markdown data/faults/summary.md

mlflow-ui: $(INSTALLED)
	@$(BIN)/python scripts/mlflow_ui.py --port $(or $(PORT),5000)

lint: $(INSTALLED)
	$(BIN)/ruff check lakehouse ml jobs tests scripts

clean:
	rm -rf data .pytest_cache
