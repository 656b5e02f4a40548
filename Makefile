# Two entry points on a fresh machine:
#   make acceptance   set up a venv with pinned dependencies, then run the acceptance suites (kind by default)
#   make test         set up a venv with the twin's extras, then run the suite's own tests (no Docker needed)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: acceptance acceptance-twin controlplane test venv venv-twin report clean

$(VENV)/.suite: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.twin: $(VENV)/.suite requirements-twin.txt
	$(PY) -m pip install --quiet -r requirements-twin.txt
	touch $@

venv: $(VENV)/.suite
venv-twin: $(VENV)/.twin

acceptance: $(VENV)/.suite
	$(PY) -m pytest suites/acceptance $(ARGS)

# The twin's control plane (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, KWOK) built from source
# through the Go module proxy into ~/.cache/kstack/twin-bin (KSTACK_CACHE_DIR); cached, so warm runs take a second.
controlplane: $(VENV)/.twin
	$(PY) -m twin.toolchain

# The acceptance suites against the twin (no Docker); its reports say SIMULATED.
acceptance-twin: controlplane
	$(PY) -m pytest suites/acceptance --cluster twin $(ARGS)

test: controlplane
	$(PY) -m pytest tests -n 2 $(ARGS)

report: $(VENV)/.suite
	$(PY) -m reports.build_html reports/allure-results -o reports/allure-report

clean:
	rm -rf reports/out reports/allure-results reports/allure-report .pytest-kind
