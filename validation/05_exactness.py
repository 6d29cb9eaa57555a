"""Claim 5: one BUG step is exact for a constant gradient along a fixed-rank curve.

Usage: python validation/05_exactness.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.exactness`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("exactness", __doc__))
