"""kstack is not a package to install: it runs from its checkout (its suites, profiles and conftest.py are files
beside the code, found from the checkout's root). `pip install .` stops here with the commands that do work."""
import sys

sys.exit("kstack runs from its checkout, not as an installed package. In the checkout: `make acceptance` (a venv with "
         "the pinned dependencies, then the acceptance suites) or `make venv`, then `.venv/bin/pytest suites/acceptance`; "
         "see README.md.")
