# magqb — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit docs lint kafka-jars kafka-start kafka-stop bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP)  ## Create .venv and install magqb with its test tools

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is needed (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

kafka-jars:  ## Fetch the Apache Kafka jars from Maven Central (done by kafka-start on first use)
	mvn -q -B -f ops/kafka/pom.xml dependency:copy-dependencies

run: install  ## Start Kafka, the QBO sandbox, the ingress and a worker in the foreground (Ctrl-C stops all)
	@ops/run-local

test: install  ## Lint and type-check, then run the whole test suite (starts its own Kafka broker on port 19092)
	@ops/test-run

docs: install  ## Build the operator's guide into site/ (MkDocs; the CLI and settings references generated)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install  ## ruff and mypy only
	@ops/lint

test-unit: install  ## Run only the unit tests (no broker)
	$(BIN)/pytest -q tests/unit

kafka-start:  ## Start the local Kafka in the background
	ops/kafka/start

kafka-stop:  ## Stop the local Kafka
	ops/kafka/stop

bench: install  ## Ingress (real broker), sandbox, quota, replay and scale benchmarks; they print their figures
	@ops/with-kafka $(BIN)/python bench/ingress.py
	@$(BIN)/python bench/sandbox.py
	@$(BIN)/python bench/quota.py
	@$(BIN)/python bench/replay.py
	@$(BIN)/python bench/scale.py

clean:  ## Remove the venv, broker data and local state (not the jar cache)
	-ops/kafka/stop
	-KAFKA_PORT=19092 KAFKA_DATA_DIR=.kafka-test-data ops/kafka/stop
	rm -rf $(VENV) .kafka-data .kafka-test-data .magqb .magqb-test *.egg-info
