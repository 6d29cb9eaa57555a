"""Layer 3, the integrator (ALGORITHM.md §2): the TDLRT step and its named sub-steps, gradients as
projectors, the naive factor baseline and synthetic problems with known constants.
"""
