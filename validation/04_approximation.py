"""Claim 4: TDLRT approximates the dense gradient flow: c1 eps + c2 lr + c3 theta/lr.

Usage: python validation/04_approximation.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.approximation`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("approximation", __doc__))
