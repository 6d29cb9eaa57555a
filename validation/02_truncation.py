"""Claim 2: the HOSVD truncation stays within sum of tails^2 <= d theta^2.

Usage: python validation/02_truncation.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.truncation`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("truncation", __doc__))
