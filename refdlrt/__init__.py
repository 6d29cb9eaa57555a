"""refdlrt: an exact, framework-free NumPy/CuPy reference implementation of TDLRT.

Symbols follow docs/ALGORITHM.md (0-based modes in code; the document counts from 1). Every
array function takes its namespace (numpy or cupy) from its inputs; importing refdlrt never
needs CuPy.

The package is layered, bottom to top; a module imports only from its own layer or below:

=============  ==============================================================================
``backend``     NumPy or CuPy (``get_xp``), ``tolerances``, ``gradcheck`` (the adjoint test)
``ops``         conv2d and its loop spec, linear, ReLU, pooling, batch norm, loss
``tensor``      Tucker format, unfoldings, mode products, ``orth``, ``hosvd``, rank rules
``dlrt``        the TDLRT step and its named sub-steps, gradient projectors, baselines, problems
``nn``          dense and low-rank layers, their projectors, models
``training``    the trainer, checkpoints, run reports, datasets
``validation``  the numerical checks of the paper's claims (``refdlrt validate``)
``oracle``      golden cases and the conformance checker for other implementations
``experiments`` grids of training runs on Dask, resumable, tables and figures (``refdlrt sweep``)
``explain``     one step printed intermediate by intermediate (``refdlrt explain``)
``cli``         the ``refdlrt`` command
``__main__``    ``python -m refdlrt``: the same command without its console script
=============  ==============================================================================

This namespace exports the algorithm API; everything else is in its module.
"""

from .backend import get_xp, gpu_available, to_numpy
from .dlrt.integrator import (
    StepInfo,
    augment,
    k_gradient,
    k_step,
    lift,
    s_step,
    tdlrt_step,
    truncate,
)
from .dlrt.matrix_step import matrix_step
from .dlrt.projector import DenseGradient
from .dlrt.reference import tdlrt_step_reference
from .gradcheck import adjoint_test
from .nn.lowrank_layers import LowRankLinear, MatrixConv2d, TuckerConv2d
from .nn.models import build_model, lenet5, vgg_small
from .ops.conv import conv2d_backward, conv2d_forward
from .ops.conv_naive import conv2d_naive, conv2d_naive_backward
from .tensor.hosvd import HOSVDInfo, hosvd
from .tensor.linalg import orth
from .tensor.ranks import compatible_ranks
from .tensor.tucker import Tucker, fold, mode_product, multi_mode_product, unfold
from .tolerances import tolerance
from .training.datasets import load_dataset, load_embedded_mnist
from .training.trainer import TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # backend and checking
    "get_xp", "to_numpy", "gpu_available", "adjoint_test", "tolerance",
    # the convolution (ALGORITHM.md §3)
    "conv2d_forward", "conv2d_backward", "conv2d_naive", "conv2d_naive_backward",
    # Tucker algebra (§1)
    "unfold", "fold", "mode_product", "multi_mode_product", "Tucker", "orth", "hosvd",
    "HOSVDInfo", "compatible_ranks",
    # one TDLRT step (§2)
    "tdlrt_step", "tdlrt_step_reference", "StepInfo", "k_gradient", "k_step", "augment", "lift",
    "s_step", "truncate", "DenseGradient", "matrix_step",
    # layers, models, training
    "TuckerConv2d", "LowRankLinear", "MatrixConv2d", "lenet5", "vgg_small", "build_model",
    "TrainConfig", "Trainer", "load_dataset", "load_embedded_mnist",
]
