# Two entry points on a fresh machine:
#   make acceptance   set up a venv with pinned dependencies, then run the acceptance suites (kind by default)
#   make test         set up a venv with the twin's extras, then run the suite's own tests (no Docker needed)
# and the inner loop: make test-fast, the self-tests that need no twin (no control plane build either).
# and the matrix: make matrix [PROFILES="seed latest"] [ARGS="--cluster twin"]: each profile in turn, then one page.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PROFILES ?= $(sort $(basename $(notdir $(wildcard profiles/*.yaml))))
MATRIX_DIR ?= reports/matrix-runs

# The workflow linters of `make test`: actionlint built from source with Go into a git-ignored cache (once per
# version: a warm machine skips the build), zizmor from PyPI (requirements-lint.txt).
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := .cache/tools/actionlint-$(ACTIONLINT_VERSION)/actionlint

.PHONY: acceptance acceptance-twin controlplane test test-fast venv venv-twin report matrix clean python-version

# Three workers on two cores: a twin run waits more than it computes (about 0.6 of a core each). loadgroup keeps a
# module's twin on one worker, and tests/scheduling.py hands out the longest work first.
TEST_ARGS := -n 3 --dist loadgroup

# The venv's Python must be 3.11 or newer (the code's own floor: tomllib, typing); macOS' /usr/bin/python3 is 3.9,
# and pip would otherwise fail deep inside an install of the pinned dependencies.
python-version:
	@v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 11))' 2>/dev/null) \
	|| { echo "make: kstack needs Python 3.11 or newer; PYTHON=$(PYTHON) is $${v:-not found}. Install one (macOS: \
	brew install python@3.12; Debian/Ubuntu: apt install python3.11-venv) and run make PYTHON=python3.12 (or python3.11)." >&2; \
	exit 1; }

$(VENV)/.suite: requirements.txt | python-version
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.twin: $(VENV)/.suite requirements-twin.txt
	$(PY) -m pip install --quiet -r requirements-twin.txt
	touch $@

$(VENV)/.lint: $(VENV)/.suite requirements-lint.txt
	$(PY) -m pip install --quiet -r requirements-lint.txt
	touch $@

$(ACTIONLINT):
	@command -v go >/dev/null 2>&1 || { echo "make test: Go is not installed; it builds actionlint $(ACTIONLINT_VERSION), \
	the workflow linter. Install Go 1.25 or newer and rerun, or put a built actionlint at $(ACTIONLINT)." >&2; exit 1; }
	GOBIN="$(abspath $(dir $(ACTIONLINT)))" go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

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

test: controlplane $(VENV)/.lint $(ACTIONLINT)
	KSTACK_ACTIONLINT="$(abspath $(ACTIONLINT))" $(PY) -m pytest tests $(TEST_ARGS) $(ARGS)

# Every self-test that needs no twin (the unit tests, the reports, the workflows): no control plane is built.
test-fast: $(VENV)/.twin $(VENV)/.lint $(ACTIONLINT)
	KSTACK_ACTIONLINT="$(abspath $(ACTIONLINT))" $(PY) -m pytest tests -m "not twin" $(TEST_ARGS) $(ARGS)

report: $(VENV)/.suite
	$(PY) -m reports.build_html reports/allure-results -o reports/allure-report

# Each profile with the README's main command (a failing profile does not stop the others), then the matrix page
# (MATRIX_DIR/page/matrix.{md,html,json}) and, where npm is installed, one Allure report of every run. Fails when a
# profile did not pass. ARGS="--cluster twin" (or --twin-fault) runs on the twin, with its extras and control plane.
matrix: $(if $(findstring twin,$(ARGS)),controlplane,$(VENV)/.suite)
	@failed=""; \
	for p in $(PROFILES); do \
	  echo "== make matrix: profile $$p"; \
	  $(MAKE) --no-print-directory acceptance ARGS="--profile $$p --alluredir $(MATRIX_DIR)/$$p/allure-results \
	    --clean-alluredir --signoff-dir $(MATRIX_DIR)/$$p/signoff $(ARGS)" || failed="$$failed $$p"; \
	done; \
	$(PY) -m reports.matrix $(addprefix $(MATRIX_DIR)/,$(PROFILES)) --out $(MATRIX_DIR)/page || exit 1; \
	results=""; for p in $(PROFILES); do \
	  [ -d $(MATRIX_DIR)/$$p/allure-results ] && results="$$results $(MATRIX_DIR)/$$p/allure-results"; \
	done; \
	if command -v npm >/dev/null 2>&1; then \
	  $(PY) -m reports.build_html $$results -o $(MATRIX_DIR)/allure-report || exit 1; \
	else echo "make matrix: npm not found: no merged Allure report (install Node.js 20+ for it)"; fi; \
	if [ -n "$$failed" ]; then echo "make matrix: did not pass:$$failed"; exit 1; fi

clean:
	rm -rf reports/out reports/allure-results reports/allure-report reports/junit.xml reports/matrix-runs .pytest-kind
