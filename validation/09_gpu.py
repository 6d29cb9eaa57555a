"""Claim 9: CuPy reproduces the NumPy results of claims 3, 4, 5 and 8 (skipped without a GPU).

Usage: python validation/09_gpu.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.gpu`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("gpu", __doc__))
