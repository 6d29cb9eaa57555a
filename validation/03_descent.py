"""Claim 3: every step satisfies the descent inequality of ALGORITHM.md section 4.

Usage: python validation/03_descent.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.descent`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("descent", __doc__))
