# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each is fast once set up: the virtual environment and the data are made once.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
STAMPS := data/stamps/.complete

.PHONY: demo test check lab data bench book reliability clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# The embedded default dataset (Debian's tuxpaint-stamps-default). `apt-get download` needs the
# package lists once; as root we refresh them ourselves, otherwise the error says what to run.
$(STAMPS): $(INSTALLED)
	$(PY) -m tlcourse.datasets stamps || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && $(PY) -m tlcourse.datasets stamps; }

data: $(STAMPS)

demo: $(INSTALLED) $(STAMPS)
	$(PY) -m tlcourse.demo

LINTED := tlcourse tests bench retrain.py label_image.py

test: $(INSTALLED) $(STAMPS)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	TLCOURSE_SMALL=1 $(PY) -m pytest tests notebooks --nbval --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

# The edit-test loop, in a few minutes: lint, format and the tests not marked slow or reliability
# (no notebooks). `make test` is the full run, and what CI runs.
check: $(INSTALLED) $(STAMPS)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) -m pytest tests -m "not slow and not reliability" -p no:cacheprovider

reliability: $(INSTALLED) $(STAMPS)
	$(PY) -m pytest tests/test_reliability.py -p no:cacheprovider

lab: $(INSTALLED) $(STAMPS)
	$(VENV)/bin/jupyter lab notebooks

# The course as a static site: every lesson executed at full size, rendered with its outputs and
# figures and Binder/Colab buttons into runs/book/_build/html (tlcourse/book.py).
book: $(INSTALLED) $(STAMPS)
	$(PY) -m tlcourse.book

bench: $(INSTALLED) $(STAMPS)
	$(PY) bench/caching.py
	$(PY) bench/performance.py
	$(PY) bench/caching_settings.py
	$(PY) bench/many_classes.py

clean:
	rm -rf $(VENV) data models runs
