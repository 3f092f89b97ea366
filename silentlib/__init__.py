"""silentlib: the library under the Silent Alignment book.

Atanasov, Bordelon & Pehlevan, "Neural Networks as Kernel Learners: The Silent
Alignment Effect", ICLR 2022 (arXiv 2111.00034).

The names below are importable from the package itself; the submodules
:mod:`silentlib.data`, :mod:`silentlib.records`, :mod:`silentlib.silence`, :mod:`silentlib.stats` and :mod:`silentlib.theory` are loaded with it
(``sl.data.mnist(...)``, ``sl.stats.correlation(...)``), :mod:`silentlib.plotting` (matplotlib) and
:mod:`silentlib.widgets` (ipywidgets) are imported on demand. A complete,
runnable example is the quick start of the README (the tests run it)::

    import silentlib as sl
    task = sl.data.linear_teacher(P=100, D=20, n_test=200)
    model = sl.MLP(d_in=20, width=200, depth=2, activation="relu", sigma=0.1)
    K = sl.ntk(model, task.x)                          # (P, P) empirical NTK
    traj = sl.train(model, task.x, task.y, lr=0.1, t_max=100, x_test=task.x_test)
    traj.alignment[-1], traj.loss[-1]
"""
__version__ = "0.1.0"  # the one place the version is defined (pyproject.toml reads it from here)

from . import data, records, silence, stats, theory
from .config import device, exact_matmul, pick, scale, seed, setup
from .kernels import cosine_similarity, kernel_alignment, kernel_regression
from .models import MLP, WideResNet
from .ntk import ntk, ntk_plan
from .train import Trajectory, crossing_time, train, train_many

__all__ = ["MLP", "WideResNet", "ntk", "ntk_plan", "train", "train_many", "Trajectory", "crossing_time",
           "kernel_alignment", "kernel_regression", "cosine_similarity", "device", "scale", "pick", "seed", "setup",
           "exact_matmul", "data", "records", "silence", "stats", "theory", "__version__"]
