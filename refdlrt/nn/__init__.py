"""Layer 4, network layers and models: dense layers, the low-rank layers (Tucker conv, matrix
linear and conv) with their projectors, and the model builder.
"""
