# tf_lth: common tasks. PYTHON can point at a venv's python.
PYTHON ?= python
FLAGFILE ?= configs/mnist_fc_dense.flags
RUN_DIR ?= runs/$(notdir $(basename $(FLAGFILE)))

.PHONY: install test test-fast train bench reproduce lint clean

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest tests -q

test-fast:
	$(PYTHON) -m pytest tests -q -m "not slow"

train:
	$(PYTHON) -m tf_lth.train --flagfile=$(FLAGFILE) --run_dir=$(RUN_DIR)

bench:
	$(PYTHON) -m bench.run

reproduce:
	$(PYTHON) -m tf_lth.reproduce --preset=mnist_fc --jobs=2

lint:
	$(PYTHON) -m pyflakes tf_lth trainers export tests bench 2>/dev/null || \
	$(PYTHON) -m compileall -q tf_lth trainers export tests bench

clean:
	rm -rf runs bench/results.json build *.egg-info
