"""Data: synthetic teachers and whitening, and the MNIST and CIFAR-10 datasets.

* :mod:`silentlib.data.synthetic` -- :func:`~silentlib.data.synthetic.whiten`,
  :func:`~silentlib.data.synthetic.linear_teacher` (a :class:`~silentlib.data.synthetic.Teacher`),
  :func:`~silentlib.data.synthetic.orthonormal_columns`.
* :mod:`silentlib.data.datasets` -- :func:`~silentlib.data.datasets.mnist` and
  :func:`~silentlib.data.datasets.cifar10` (a :class:`~silentlib.data.datasets.Dataset`),
  :data:`~silentlib.data.datasets.CIFAR10_CLASSES`.
* :mod:`silentlib.data.files` -- where the images come from: the local cache
  (:func:`~silentlib.data.files.data_root`), files and downloads, and
  :class:`~silentlib.data.files.DatasetUnavailable` when none of them works.

The names above are importable from :mod:`silentlib.data` itself
(``from silentlib.data import linear_teacher, mnist``).
"""
from .datasets import CIFAR10_CLASSES, Dataset, cifar10, mnist  # noqa: F401
from .files import DatasetUnavailable, data_root  # noqa: F401
from .synthetic import Teacher, linear_teacher, orthonormal_columns, whiten  # noqa: F401
