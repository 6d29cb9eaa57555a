"""Layer 1, the network operations: each a pair of pure functions ``*_forward(...) -> (out, cache)``
and ``*_backward(dout, cache) -> grads`` (conv2d and its loop spec, linear, ReLU, pooling,
batch norm, softmax cross-entropy).
"""
