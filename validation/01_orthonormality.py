"""Claim 1: orthonormal bases and an exact lift over long rank-adaptive runs.

Usage: python validation/01_orthonormality.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.orthonormality`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("orthonormality", __doc__))
