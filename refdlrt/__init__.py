"""refdlrt: an exact, framework-free NumPy/CuPy reference implementation of TDLRT.

Symbols follow docs/ALGORITHM.md (0-based modes in code). Every array function takes its
namespace (numpy or cupy) from its inputs; importing refdlrt never needs CuPy.
"""

from .activation import relu_backward, relu_forward
from .backend import get_xp, gpu_available, to_numpy
from .baselines import naive_factor_gradients, naive_factor_step
from .batchnorm import batchnorm2d_backward, batchnorm2d_forward
from .conv import (
    conv2d_backward,
    conv2d_forward,
    conv2d_naive,
    conv2d_naive_backward,
    conv2d_weight_grad,
    conv_output_size,
)
from .datasets import (
    FASHION_MNIST_DEBIAN_DIR,
    Dataset,
    embedded_mnist_split,
    iterate_minibatches,
    load_cifar10_dir,
    load_dataset,
    load_embedded_mnist,
    load_fashion_mnist,
    load_mnist_dir,
    read_idx,
    standardize,
)
from .gradcheck import AdjointResult, adjoint_test, linear_adjoint_check
from .hosvd import HOSVDInfo, hosvd, tail_norms, truncation_rank
from .integrator import (
    StepInfo,
    augment,
    compatible_ranks,
    k_gradient,
    k_step,
    lift,
    s_step,
    tdlrt_step,
    truncate,
)
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from .linalg import max_orthonormality_error, orth, orthonormality_error, qr_signfixed
from .linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from .lowrank_layers import LowRankLinear, MatrixConv2d, TuckerConv2d
from .loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .pooling import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward
from .problems import (
    LinearProblem,
    QuadraticProblem,
    TargetProblem,
    random_quadratic,
    random_tucker,
)
from .models import build_model, lenet5, vgg_small
from .projector import DenseGradient, MomentumGradient
from .tolerances import TOLERANCES, Tolerance, tolerance
from .train import TrainConfig, Trainer, TrainingDiverged
from .tucker import Tucker, fold, mode_product, multi_mode_product, tucker_to_tensor, unfold

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # backend
    "get_xp", "to_numpy", "gpu_available",
    # checking
    "adjoint_test", "linear_adjoint_check", "AdjointResult", "Tolerance", "TOLERANCES", "tolerance",
    # primitives
    "conv2d_forward", "conv2d_backward", "conv2d_naive", "conv2d_naive_backward",
    "conv2d_weight_grad", "conv_output_size",
    "linear_forward", "linear_backward", "flatten_forward", "flatten_backward",
    "relu_forward", "relu_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "batchnorm2d_forward", "batchnorm2d_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    # Tucker algebra
    "unfold", "fold", "mode_product", "multi_mode_product", "Tucker", "tucker_to_tensor",
    "orth", "qr_signfixed", "orthonormality_error", "max_orthonormality_error",
    "hosvd", "HOSVDInfo", "truncation_rank", "tail_norms",
    # integrator
    "tdlrt_step", "StepInfo", "k_step", "k_gradient", "compatible_ranks", "augment", "lift", "s_step", "truncate", "DenseGradient",
    "naive_factor_step", "naive_factor_gradients",
    "QuadraticProblem", "TargetProblem", "LinearProblem", "random_quadratic", "random_tucker",
    # layers, models, training
    "Conv2d", "Linear", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten",
    "TuckerConv2d", "LowRankLinear", "MatrixConv2d", "MomentumGradient",
    "lenet5", "vgg_small", "build_model", "TrainConfig", "Trainer", "TrainingDiverged",
    # data
    "Dataset", "standardize", "read_idx", "load_mnist_dir", "load_fashion_mnist",
    "load_embedded_mnist", "embedded_mnist_split", "load_cifar10_dir", "load_dataset",
    "iterate_minibatches", "FASHION_MNIST_DEBIAN_DIR",
]
