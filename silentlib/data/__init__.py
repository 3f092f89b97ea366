"""Data: synthetic teachers and whitening, and the MNIST and CIFAR-10 datasets.

* :mod:`silentlib.data.synthetic` -- :func:`~silentlib.data.synthetic.whiten`,
  :func:`~silentlib.data.synthetic.linear_teacher` (a :class:`~silentlib.data.synthetic.Teacher`),
  :func:`~silentlib.data.synthetic.orthonormal_columns`.
* :mod:`silentlib.data.datasets` -- :func:`~silentlib.data.datasets.mnist` and
  :func:`~silentlib.data.datasets.cifar10` (a :class:`~silentlib.data.datasets.Dataset`),
  :data:`~silentlib.data.datasets.CIFAR10_CLASSES`.
* :mod:`silentlib.data.files` -- where the images come from: the data folder that is read
  (:func:`~silentlib.data.files.data_root`, ``$SILENT_DATA``), the user cache that downloads
  go to (:func:`~silentlib.data.files.cache_dir`), the file readers and the CIFAR-10 download
  (:func:`~silentlib.data.files.download_cifar10`);
  :class:`~silentlib.data.files.DatasetCorrupt` when a file is present but broken and
  :class:`~silentlib.data.files.DatasetUnavailable` when no source works.

The names above are importable from :mod:`silentlib.data` itself
(``from silentlib.data import linear_teacher, mnist``).
"""
from .datasets import CIFAR10_CLASSES, Dataset, cifar10, mnist  # noqa: F401
from .files import DatasetCorrupt, DatasetUnavailable, cache_dir, data_root, download_cifar10  # noqa: F401
from .synthetic import Teacher, linear_teacher, orthonormal_columns, whiten  # noqa: F401
