# Two commands on a fresh machine:  `make app`  (the dashboard)  and  `make test`  (the test suite).
# Both create ./.venv on first use and install aelib into it (editable) with its dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.aelib-installed

.PHONY: app test lint bench screenshots clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $(STAMP)

app: $(STAMP)
	$(PY) -m streamlit run streamlit_app.py

# Three test workers on two cores: most of the suite's wall time is browsers and servers waiting
# (pages settling, runs finishing), so a third worker fills idle cores. `make test TEST_WORKERS=0`
# runs everything in one process.
TEST_WORKERS ?= 3

test: $(STAMP)
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

# The README's page screenshots, redrawn by the browser tests (a plain test run leaves them alone).
screenshots: $(STAMP)
	AELIB_UPDATE_SCREENSHOTS=1 $(PY) -m pytest tests/test_browser.py

lint: $(STAMP)
	$(PY) -m ruff check aelib tests bench pages streamlit_app.py

bench: $(STAMP)
	$(PY) -m aelib bench seed-recipe --data-root ../shared/data

clean-venv:
	rm -rf $(VENV)
