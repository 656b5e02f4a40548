# The suite's plugins: Allure results and the sign-off (reports/), then options, cluster, install and diagnostics
# (fixtures/, which builds on reports/), the root cause of a failed check (fixtures/blocking.py) and the evidence
# checks record (fixtures/evidence.py).
pytest_plugins = ["reports.plugin", "fixtures.plugin", "fixtures.blocking", "fixtures.evidence"]
