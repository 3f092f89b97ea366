"""Where computations run, at which scale, and at which precision.

* :func:`device` -- where the book computes: ``SILENT_DEVICE`` when set (``cpu``,
  ``cuda``, ``cuda:1``, ...), else CUDA when available, else the CPU.
* :func:`scale` -- the book's size switch, read from the environment variable
  ``SILENT_SCALE``: ``"fast"`` (the default; every chapter runs in well under a
  minute on two CPU cores) or ``"paper"`` (the paper's sizes; minutes per chapter on two
  CPU cores; chapter 9's Wide-ResNet wants a GPU).
* :func:`seed` -- the book's seed, read from ``SILENT_SEED`` (default 0): every random draw
  of every chapter (data, initial weights, test points, splits) derives from it.
* :func:`setup` -- the one call at the top of every chapter: float64, threads, the seed.
* :func:`exact_matmul` -- a context in which float32 matrix products are never
  computed in TF32 (NVIDIA GPUs otherwise may use TF32, which keeps only 10
  mantissa bits and would spoil kernel comparisons at the 1e-3 level).
* :func:`device_name`, :func:`free_memory` -- what the device is and how much room it has.
* :func:`as_batch`, :func:`as_float64`, :func:`check_int` (:func:`is_int`) -- the library's checks of its inputs
  (one each, shared by every module: tensors for training, float64 arrays for the analysis).
"""
from __future__ import annotations

import contextlib
import numbers
import os
import platform

import numpy as np
import torch

SCALES = ("fast", "paper")
MAX_SEED = 2**31 - 1


def device() -> torch.device:
    """``SILENT_DEVICE`` when set, else CUDA when available, else the CPU.

    :func:`silentlib.train` trains there (and hands the model back on its own device).
    Raises ``ValueError`` for an unknown device or a CUDA device on a machine without CUDA.
    """
    value = os.environ.get("SILENT_DEVICE", "").strip().lower()
    if not value:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"SILENT_DEVICE must name a torch device such as 'cpu' or 'cuda', got {value!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"SILENT_DEVICE={value!r} but this torch has no CUDA device; unset it or use 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"SILENT_DEVICE must be 'cpu' or a CUDA device, got {value!r}")
    return dev


def device_name(dev: torch.device | str | None = None, *, detailed: bool = False) -> str:
    """A readable name for ``dev`` (default :func:`device`): the GPU's (e.g. "NVIDIA H100 80GB HBM3"),
    or "CPU"; with ``detailed``, the CPU's model and torch's thread count (the benchmark's reports)."""
    dev = device() if dev is None else torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if not detailed:
        return "CPU"
    name = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            name = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def scale() -> str:
    """The book's scale, ``"fast"`` or ``"paper"``, from ``SILENT_SCALE`` (default ``"fast"``)."""
    value = os.environ.get("SILENT_SCALE", "fast").strip().lower() or "fast"
    if value not in SCALES:
        raise ValueError(f"SILENT_SCALE must be one of {SCALES}, got {value!r}")
    return value


def pick(fast, paper):
    """Return ``fast`` or ``paper`` according to :func:`scale` (chapters size their runs with it)."""
    return paper if scale() == "paper" else fast


def seed() -> int:
    """The book's seed: the integer in ``SILENT_SEED`` (default 0).

    Chapters derive every random draw from it (``seed() + k`` for their k-th draw), so one
    variable re-runs the whole book on other data and initial weights. Raises ``ValueError``
    unless it is an integer in [0, 2**31 - 1].
    """
    value = os.environ.get("SILENT_SEED", "").strip()
    if not value:
        return 0
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"SILENT_SEED must be a non-negative integer such as 0 or 3, got {value!r}") from None
    if not 0 <= number <= MAX_SEED:
        raise ValueError(f"SILENT_SEED must be an integer in [0, {MAX_SEED}], got {number}")
    return number


def setup() -> int:
    """The chapters' setup call: float64 by default, the threads, the seed; returns :func:`seed`.

    NumPy's BLAS (threadpoolctl, when installed) computes on one thread at every scale: the
    chapters' NumPy and SciPy calls are small or short, and two OpenBLAS threads on cores that
    other processes keep busy wait for each other at every barrier (an eigendecomposition of a
    1500 x 1500 matrix took 30 s on two threads of a busy 2-core machine, 3.4 s on one). torch
    uses one thread at the fast scale, where every problem is small; at the paper scale as many as
    other processes leave cores free when the chapter starts
    (:func:`silentlib.ntk.products.threads_for`), which training
    (:class:`silentlib.threads.StepThreads`) and the NTKs (:func:`silentlib.ntk.products.cpu_threads`)
    reduce further per call by their work and the machine's load. ``torch.manual_seed`` is set to
    the seed, so that weights drawn without an explicit generator derive from it too.
    """
    from .ntk.products import threads_for

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1 if scale() == "fast" else threads_for(torch.get_num_threads()))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # an optional dependency: without it NumPy keeps its threads
        pass
    else:
        threadpool_limits(1, user_api="blas")   # not OpenMP: that would set torch's threads too
    number = seed()
    torch.manual_seed(number)
    return number


@contextlib.contextmanager
def exact_matmul():
    """Disable TF32 (and reduced-precision reductions) for the duration of the block."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.set_float32_matmul_precision(saved[2])


def free_memory(dev: torch.device) -> int:
    """Bytes that can still be allocated on ``dev``: CUDA's free memory, or the host's MemAvailable."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30  # no /proc/meminfo (macOS, Windows): assume a modest laptop


def as_batch(a, name, like: torch.Tensor) -> torch.Tensor:
    """``a`` (array, tensor or nested list) as a tensor on ``like``'s device and dtype.

    Checks that it is a non-empty batch (examples along the first axis) with finite entries,
    raising ``ValueError`` that names ``name`` otherwise.
    """
    if not torch.is_tensor(a):
        a = torch.as_tensor(np.asarray(a))
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch with examples along the first axis, got shape {tuple(a.shape)}")
    a = a.to(device=like.device, dtype=like.dtype)
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} has non-finite entries")
    return a


def as_float64(a, name: str, *, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """``a`` (array, tensor or nested list) as a float64 numpy array on the host.

    Raises ``ValueError`` that names ``name`` when ``a`` is empty, when ``ndim`` is given and
    ``a`` has another number of dimensions, or, with ``finite``, when an entry is NaN or infinite
    (plots pass ``finite=False``: a curve may hold an ``inf`` "never crossed" time).
    """
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
    if finite and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite entries")
    return a


def is_int(value) -> bool:
    """Whether ``value`` is a Python or numpy integer (not a bool, a float such as 3.0, or a string)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless it is an integer >= ``minimum``.

    Python and numpy integers are accepted; bools, floats (even 3.0) and strings are not
    (:func:`is_int`). The library's one check of counts and sizes.
    """
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
