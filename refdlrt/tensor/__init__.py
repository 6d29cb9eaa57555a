"""Layer 2, Tucker algebra (ALGORITHM.md §1): unfoldings, mode products, the Tucker format,
orthonormal bases, the truncated HOSVD and rank rules.
"""
