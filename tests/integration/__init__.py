# Makes tests/integration importable for `python3 -m unittest discover -s tests/integration -t .`.
# Test modules add tests/lib to sys.path themselves (see tests/lib/harness.py).
