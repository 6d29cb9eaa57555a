"""``python -m refdlrt ...``: the ``refdlrt`` command without its console script (a machine
where the package is on ``PYTHONPATH`` but not installed, such as a lent GPU machine)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
