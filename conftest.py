# The suite's plugins: Allure results and the sign-off (reports/), then options, cluster, install and diagnostics
# (fixtures/, which builds on reports/).
pytest_plugins = ["reports.plugin", "fixtures.plugin"]
