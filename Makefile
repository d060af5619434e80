# Two commands set everything up from nothing: `make test` and `make demo`.
# Each creates or updates the virtual environment in $(VENV) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: test demo study campaign bench install clean

install: $(INSTALLED)

# PYTHONWARNINGS hides setuptools' informational block about editable installs, printed on every build.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Two workers, one test file each at a time: the suite is mostly single-threaded XLA compiles. The longest files
# go first, in the order tests/conftest.py gives them.
test: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The main job at CPU size (minutes): the released VTA agent plays an episode (an animation), a short VTA
# training run whose boundaries are its own is judged on scripted episodes, three lines sum it up. Running it
# again resumes the finished run, which only prints where it is.
demo: $(INSTALLED)
	$(BIN)/python -m experiments.demo --out $(DEMO_OUT)

# The study behind docs/results/study.md, from the campaign's records (docs/results/runs): RSSM, the default VTA, two
# of the prototype's VTA conditions and ours, three seeds each, on pinpad_three at the CPU preset to 40k env steps.
study: $(INSTALLED)
	$(BIN)/python -m experiments.study --records docs/results/runs

# The runs behind the results, a few at a time (benchmarks/campaign.json lists them): trains the next ones that fit
# BUDGET, resuming any run under way, and records each finished run under docs/results/runs/ (committed at once with
# COMMIT=1). Its state lives outside the work tree ($$XDG_CACHE_HOME/dreamer_jax/campaign).
BUDGET ?= 2.5h
campaign: $(INSTALLED)
	$(BIN)/python -m benchmarks.campaign --budget $(BUDGET) $(if $(COMMIT),--commit)

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.env_throughput
	$(BIN)/python -m benchmarks.train_throughput
	$(BIN)/python -m benchmarks.dynamics_cost
	$(BIN)/python -m benchmarks.scale_throughput

clean:
	rm -rf $(VENV) runs .pytest_cache
