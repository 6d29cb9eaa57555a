"""Claim 7: from a high-rank start TDLRT finds the target's Tucker rank.

Usage: python validation/07_rank_adaptivity.py [--quick] [--seed N] [--backend numpy|cupy] [--out DIR]

Runs ``refdlrt.validation.rank_adaptivity`` (its docstring states the claim and the inequality), prints
the measured values, bounds and the verdict, writes report.md / results.json / the plot into
--out, and exits 1 if the claim does not hold. See validation/README.md.
"""

import sys

from _script import main

if __name__ == "__main__":
    sys.exit(main("rank_adaptivity", __doc__))
