"""Claim 6: TDLRT is robust to small singular values; naive factor descent is not.

Usage: python validation/06_robustness.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.robustness`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("robustness", __doc__))
