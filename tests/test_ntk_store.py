"""Kernels written to disk block by block (``ntk(..., out=PATH)``, silentlib.ntk.store), in one process:
the file equals the kernel computed in memory, a finished file is returned as it is, an interrupted
run resumes with only the missing blocks, and a file of another kernel is refused and left alone.
The kills, the memory cap and the ranks of a process group are in test_ntk_distributed.py."""
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import silentlib as sl
from silentlib import config
from silentlib.ntk import blocks, distributed, store

from test_ntk import brute_force_ntk, rel_err


def files(path):
    """The kernel's three files."""
    return [path, store.partial_path(path), store.index_path(path)]


def mlp(C=3, seed=0):
    torch.manual_seed(seed)
    return sl.MLP(6, 20, 3, out_dim=C, activation="tanh", bias=True).double()


def cnn(C=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, C)).double()


class Counter:
    """Counts the block pairs marked done (store.KernelFile.finished); with ``stop_after``, raises
    KeyboardInterrupt when that many are done, as an interrupted run would stop."""

    def __init__(self, monkeypatch, stop_after=None):
        self.count, self.stop_after = 0, stop_after
        finished = store.KernelFile.finished

        def counted(kf, k):
            if self.stop_after is not None and self.count == self.stop_after:
                raise KeyboardInterrupt("stopped by the test")
            finished(kf, k)
            self.count += 1
        monkeypatch.setattr(store.KernelFile, "finished", counted)


CASES = {  # name: (model, x1, x2, kwargs)
    "mlp": lambda: (mlp(), torch.randn(23, 6), None, {"block_size": 5}),
    "mlp-x2": lambda: (mlp(), torch.randn(23, 6), torch.randn(11, 6), {"block_size": 5}),
    "mlp-scalar": lambda: (mlp(C=1), torch.randn(23, 6), None, {"block_size": 4}),
    "mlp-outputs": lambda: (mlp(), torch.randn(9, 6), None, {"outputs": [2, 0]}),
    "cnn-jacobian": lambda: (cnn(), torch.randn(9, 2, 6, 6), None, {"block_size": 2}),
    "cnn-vp-x2": lambda: (cnn(), torch.randn(9, 2, 6, 6), torch.randn(5, 2, 6, 6), {"method": "vp", "block_size": 3}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_file_equals_the_kernel_in_memory(tmp_path, name):
    torch.manual_seed(1)
    model, x1, x2, kw = CASES[name]()
    ref = sl.ntk(model, x1, x2, **{k: v for k, v in kw.items() if k != "block_size"})
    path = tmp_path / "K.npy"
    K = sl.ntk(model, x1, x2, out=path, **kw)
    assert isinstance(K, np.memmap) and not K.flags.writeable and K.shape == tuple(ref.shape)
    assert K.dtype == np.float64
    assert rel_err(torch.from_numpy(np.array(K)), ref) < 1e-12
    assert np.array_equal(np.load(path), K)                                  # a plain .npy file
    assert not store.partial_path(path).exists()
    assert json.loads(store.index_path(path).read_text())["done"] == "1" * len(store.read_index(path)["done"])


def test_file_equals_brute_force(tmp_path):
    torch.manual_seed(2)
    model = mlp(C=2)
    x1, x2 = torch.randn(7, 6), torch.randn(4, 6)
    for a, b, name in ((x1, None, "K.npy"), (x1, x2, "K12.npy")):
        K = sl.ntk(model, a, b, out=tmp_path / name, block_size=2)
        assert rel_err(torch.from_numpy(np.array(K)), brute_force_ntk(model, a, a if b is None else b)) < 1e-10


def test_finished_file_is_returned_without_computing(tmp_path, monkeypatch):
    model, x = mlp(), torch.randn(12, 6)
    path = tmp_path / "K.npy"
    first = np.array(sl.ntk(model, x, out=path, block_size=4))
    counter = Counter(monkeypatch)
    again = sl.ntk(model, x, out=path, block_size=None)      # resumes in the file's grid: nothing to do
    assert counter.count == 0 and np.array_equal(again, first)


def test_interrupted_run_resumes_with_only_the_missing_blocks(tmp_path, monkeypatch):
    model, x = mlp(), torch.randn(20, 6)
    ref = sl.ntk(model, x)
    path = tmp_path / "K.npy"
    with monkeypatch.context() as m:
        Counter(m, stop_after=4)
        with pytest.raises(KeyboardInterrupt):
            sl.ntk(model, x, out=path, block_size=3)
    assert not path.exists()                                  # a half-written kernel is never at PATH
    done = store.read_index(path)["done"]
    n = len(done)
    assert done.count("1") == 4 and n == 7 * 8 // 2           # 7 blocks of 3 inputs, on and above the diagonal
    counter = Counter(monkeypatch)
    K = sl.ntk(model, x, out=path, block_size=3)
    assert counter.count == n - 4
    assert rel_err(torch.from_numpy(np.array(K)), ref) < 1e-12


def test_parameter_groups_add_up_in_the_file(tmp_path, monkeypatch):
    """When one input's Jacobian does not fit, the parameter groups' kernels are added in the file
    (each block read back from disk for the next group)."""
    torch.manual_seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 30), nn.Tanh(), nn.Linear(30, 30), nn.Tanh(),
                          nn.Linear(30, 2)).double()
    x = torch.randn(6, 2, 6, 6)
    ref = sl.ntk(model, x, method="jacobian")
    reads = []
    read = store.KernelFile.read
    monkeypatch.setattr(store.KernelFile, "read", lambda kf, *a: reads.append(a) or read(kf, *a))
    for k in range(80):  # the smallest memory that still works splits the parameters
        monkeypatch.setattr(config, "free_memory", lambda dev, n=int(4e4 * 1.1 ** k): n)
        try:
            K = sl.ntk(model, x, method="jacobian", out=tmp_path / f"K{k}.npy")
            break
        except ValueError as err:
            assert "working memory" in str(err)
    assert reads, "the parameters were not split into groups"
    assert rel_err(torch.from_numpy(np.array(K)), ref) < 1e-12


def test_blocks_are_sized_by_the_device_memory_alone(tmp_path, monkeypatch):
    """A kernel that does not fit in the (pretended) free memory is refused in memory, and computed
    block by block into a file."""
    model, x = mlp(C=2), torch.randn(120, 6)
    ref = sl.ntk(model, x)
    monkeypatch.setattr(config, "free_memory", lambda dev: 400_000)  # the kernel takes 461 kB
    with pytest.raises(ValueError, match="out='kernel.npy'"):
        sl.ntk(model, x)
    written = []
    write = store.KernelFile.write
    monkeypatch.setattr(store.KernelFile, "write", lambda kf, i0, j0, b: written.append(b.shape) or write(kf, i0, j0, b))
    K = sl.ntk(model, x, out=tmp_path / "K.npy")
    assert max(s[0] * s[1] * 4 * 8 for s in written) < 400_000 / 4
    assert rel_err(torch.from_numpy(np.array(K)), ref) < 1e-12


def test_file_of_another_kernel_is_refused_and_left_alone(tmp_path, monkeypatch):
    model, x = mlp(), torch.randn(12, 6)
    path = tmp_path / "K.npy"
    with monkeypatch.context() as m:
        Counter(m, stop_after=2)
        with pytest.raises(KeyboardInterrupt):
            sl.ntk(model, x, out=path, block_size=4)
    before = [f.read_bytes() for f in files(path)[1:]]
    for args, kw, what in [((mlp(seed=5), x), {}, "model"), ((model, x + 1), {}, "x1"), ((model, x, x), {}, "x2"),
                           ((model, x), {"outputs": [0]}, "outputs"), ((model, x), {"method": "jacobian"}, "method")]:
        with pytest.raises(ValueError, match=f"belongs to another kernel.*other {what} "):
            sl.ntk(*args, out=path, block_size=4, **kw)
    with pytest.raises(ValueError, match="other model, x1, dtype "):
        sl.ntk(mlp().float(), x.float(), out=path, block_size=4)
    with pytest.raises(ValueError, match="started with block_size=4"):
        sl.ntk(model, x, out=path, block_size=3)
    assert [f.read_bytes() for f in files(path)[1:]] == before and not path.exists()


def test_files_without_index_or_broken_are_refused(tmp_path):
    model, x = mlp(), torch.randn(8, 6)
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, np.ones((8, 8, 3, 3)))
    with pytest.raises(ValueError, match="has no index.*neither reused nor overwritten"):
        sl.ntk(model, x, out=foreign)
    assert np.array_equal(np.load(foreign), np.ones((8, 8, 3, 3)))

    path = tmp_path / "K.npy"
    sl.ntk(model, x, out=path, block_size=4)
    store.index_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="is not an index"):
        sl.ntk(model, x, out=path)

    truncated = tmp_path / "T.npy"
    sl.ntk(model, x, out=truncated, block_size=4)
    os.replace(truncated, store.partial_path(truncated))
    with open(store.partial_path(truncated), "r+b") as fh:
        fh.truncate(os.path.getsize(store.partial_path(truncated)) - 8)
    with pytest.raises(ValueError, match="truncated"):
        sl.ntk(model, x, out=truncated)


def test_no_room_on_disk_and_no_numpy_dtype_are_refused(tmp_path, monkeypatch):
    model, x = mlp(), torch.randn(8, 6)
    with pytest.raises(ValueError, match="NumPy has no torch.bfloat16"):
        sl.ntk(model.bfloat16(), x, out=tmp_path / "K.npy")
    model.double()
    usage = store.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ValueError, match="does not exist"):
        sl.ntk(model, x, out=tmp_path / "nowhere" / "K.npy")
    with pytest.raises(ValueError, match="on disk"):
        sl.ntk(model, x, out=tmp_path / "K.npy")
    assert not any(f.exists() for f in files(tmp_path / "K.npy"))


def test_pairs_are_shared_evenly_and_exactly_once():
    """Ranks.pick: the ranks' shares are disjoint contiguous runs that cover every pair, each of about
    1/size of the cost."""
    for P1, P2, b, same in ((100, 100, 7, True), (100, 37, 9, False), (10, 10, 10, True)):
        call = type("Call", (), {"x1": torch.empty(P1), "x2": torch.empty(P2), "same": same})
        rows, cols, pairs = blocks.upper_pairs(call, b)
        for size in (1, 2, 3, 5):
            shares = [distributed.Ranks(r, size, torch.device("cpu")).pick(rows, cols, pairs, same)
                      for r in range(size)]
            assert [p for s in shares for p in s] == pairs          # in order, each once
            cost = [sum((rows[i][1] - rows[i][0]) * (cols[j][1] - cols[j][0]) for i, j in s) for s in shares]
            biggest = b * b
            assert max(cost) - min(cost) <= 2 * biggest + (0 if len(pairs) >= size else P1 * P2)
