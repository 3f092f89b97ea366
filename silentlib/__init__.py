"""silentlib: the library under the Silent Alignment book.

Atanasov, Bordelon & Pehlevan, "Neural Networks as Kernel Learners: The Silent
Alignment Effect", ICLR 2022 (arXiv 2111.00034).

    >>> import silentlib as sl
    >>> model = sl.MLP(d_in=10, width=50, depth=2, activation="relu", sigma=0.1)
    >>> K = sl.ntk(model, x)                      # (P, P) empirical NTK
    >>> traj = sl.train(model, x, y, lr=0.05, t_max=200)
    >>> traj.alignment[-1], traj.loss[-1]
"""
from .config import device, exact_matmul, pick, scale, seed, setup
from .kernels import cosine_similarity, kernel_alignment, kernel_regression
from .models import MLP, WideResNet
from .ntk import ntk, ntk_plan
from .train import Trajectory, crossing_time, train

__all__ = ["MLP", "WideResNet", "ntk", "ntk_plan", "train", "Trajectory", "crossing_time",
           "kernel_alignment", "kernel_regression", "cosine_similarity", "device", "scale", "pick", "seed", "setup", "exact_matmul"]
__version__ = "0.1.0"
