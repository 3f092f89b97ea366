"""The NTK spread over the ranks of a torch.distributed process group (silentlib.ntk.distributed): gloo
processes on 127.0.0.1 started by distributed.launch, which kills them after a timeout. Every rank's
kernel equals the one-process kernel (and a small one brute force); the ranks share the work; a rank
that raises or was given other inputs makes every rank raise with its message; a kernel larger than
what each process may allocate goes to one shared file, and after a kill only the missing blocks are
computed again."""
import os
import resource
import signal

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import silentlib as sl
from silentlib.ntk import blocks, distributed, layerwise, store

from helpers import load_module
from test_ntk import brute_force_ntk, rel_err

TIMEOUT = 120  # seconds for a whole launch; a hang fails the test instead of the session


def mlp(C=3, seed=0, width=20):
    torch.manual_seed(seed)
    return sl.MLP(6, width, 3, out_dim=C, activation="tanh", bias=True).double()


def cnn(C=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, C)).double()


def cases():
    """{name: (model, x1, x2, keywords)}, the same in every process (float64 by default, as in conftest.py)."""
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(0)
    x, x2 = torch.randn(37, 6, generator=g, dtype=torch.float64), torch.randn(19, 6, generator=g, dtype=torch.float64)
    xc, xc2 = (torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64) for n in (13, 7))
    return {"mlp": (mlp(), x, None, {}), "mlp-x2": (mlp(), x, x2, {}), "mlp-scalar": (mlp(C=1), x, None, {}),
            "mlp-scalar-x2": (mlp(C=1), x, x2, {}),
            "cnn-jacobian": (cnn(), xc, None, {"method": "jacobian"}),
            "cnn-jacobian-x2": (cnn(), xc, xc2, {"method": "jacobian"}),
            "cnn-vp-x2": (cnn(), xc, xc2, {"method": "vp", "block_size": 2}),
            "brute-force": (mlp(C=2, width=5), x[:5], None, {"block_size": 2})}


def count_blocks():
    """Count, in this process, the block pairs that a rank's share completes ([count])."""
    count = [0]
    for target in (blocks.Kernel, store.Target):
        def written(self, bi, bj, last, _orig=target.written):
            _orig(self, bi, bj, last)
            count[0] += bool(last and self.pick is not None)
        target.written = written
    return count


def error_of(fn):
    """(exception class name, message) of what fn() raises, or None."""
    try:
        fn()
    except Exception as err:
        return type(err).__name__, str(err)
    return None


# ---------------------------------------------------------------------------- what the ranks run

def rank_kernels(folder):
    count = count_blocks()
    out = {}
    for name, (model, x1, x2, kw) in cases().items():
        before = count[0]
        out[name] = (sl.ntk(model, x1, x2, **kw).numpy(), count[0] - before)
    for name in ("mlp", "cnn-jacobian-x2"):
        model, x1, x2, kw = cases()[name]
        before = count[0]
        K = sl.ntk(model, x1, x2, out=os.path.join(folder, f"{name}.npy"), **kw)
        out["file-" + name] = (np.array(K), count[0] - before)
    return out


def failing_after(n, fn, error):
    """fn, except that its call after the first n raises ``error``."""
    calls = []

    def wrapped(*args):
        if len(calls) == n:
            raise error
        calls.append(args)
        return fn(*args)
    return wrapped


def rank_failures(folder, foreign):
    """What each rank raises when the ranks are given different calls, when the file belongs to another
    kernel, when rank 1 alone runs out of memory or breaks after writing one block; then the file of
    the broken call computed again."""
    rank = dist.get_rank()
    model, x, _, _ = cases()["mlp"]
    got = {"inputs": error_of(lambda: sl.ntk(model, x + rank)),
           "weights": error_of(lambda: sl.ntk(mlp(seed=rank), x)),
           "index": error_of(lambda: sl.ntk(model, x, out=foreign))}
    features, finished = layerwise.features, store.KernelFile.finished
    if rank == 1:
        layerwise.features = failing_after(0, features, MemoryError("no memory on rank 1"))
    got["memory"] = error_of(lambda: sl.ntk(model, x))
    layerwise.features = features
    if rank == 1:
        store.KernelFile.finished = failing_after(1, finished, RuntimeError("rank 1 broke after one block"))
    path = os.path.join(folder, "R.npy")
    got["raises"] = error_of(lambda: sl.ntk(model, x, out=path, block_size=4))
    got["after"] = os.path.exists(path), store.read_index(path)["done"]
    store.KernelFile.finished = finished
    count = count_blocks()
    K = np.array(sl.ntk(model, x, out=path, block_size=4))    # the same call again: the missing blocks
    return got, K, count[0]


def big_case():
    """A kernel of 104 MB (P = 3600, one output, float64)."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(3)
    return sl.MLP(4, 16, 2, activation="tanh").double(), torch.randn(3600, 4, dtype=torch.float64)


#: What each rank may allocate beyond what it holds once torch is loaded (the kernel is 104 MB).
HEADROOM = 48 * 2**20


def rank_capped(path, kill_after):
    """Under RLIMIT_DATA (what this process uses + HEADROOM): the kernel in memory fails, the file is
    written; with ``kill_after``, the last rank kills itself (SIGKILL) after that many of its blocks."""
    with open("/proc/self/status") as fh:
        used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmData:"))
    resource.setrlimit(resource.RLIMIT_DATA, (used + HEADROOM, resource.RLIM_INFINITY))
    model, x = big_case()
    in_memory = error_of(lambda: sl.ntk(model, x, distributed=False))
    count, finished = [0], store.KernelFile.finished

    def counted(kf, k):
        finished(kf, k)
        count[0] += 1
        if kill_after is not None and dist.get_rank() == dist.get_world_size() - 1 and count[0] >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    store.KernelFile.finished = counted
    K = sl.ntk(model, x, out=path)
    return in_memory, count[0], K.shape


# ---------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spread")
    return distributed.launch(rank_kernels, 2, str(folder), timeout=TIMEOUT)


@pytest.mark.parametrize("name", [n for n in cases() if n != "brute-force"] + ["file-mlp", "file-cnn-jacobian-x2"])
def test_every_rank_gets_the_one_process_kernel(spread, name):
    model, x1, x2, kw = cases()[name.removeprefix("file-")]
    ref = sl.ntk(model, x1, x2, **{k: v for k, v in kw.items() if k != "block_size"})
    for rank, results in enumerate(spread):
        K, computed = results[name]
        assert K.shape == tuple(ref.shape)
        assert rel_err(torch.from_numpy(K), ref) < 1e-12, (name, rank)
        assert computed > 0, f"rank {rank} computed no block of {name}"  # the work was shared


def test_spread_kernel_equals_brute_force(spread):
    model, x1, _, _ = cases()["brute-force"]
    for results in spread:
        assert rel_err(torch.from_numpy(results["brute-force"][0]), brute_force_ntk(model, x1, x1)) < 1e-10


def test_a_failing_or_mismatched_rank_makes_every_rank_raise(tmp_path):
    foreign = tmp_path / "foreign.npy"
    sl.ntk(mlp(C=1), cases()["mlp"][1], out=foreign)        # the kernel of another model
    before = foreign.read_bytes()
    results = distributed.launch(rank_failures, 2, str(tmp_path), str(foreign), timeout=TIMEOUT)
    model, x, _, _ = cases()["mlp"]
    ref = sl.ntk(model, x)
    for rank, (got, K, computed) in enumerate(results):
        assert got["inputs"][0] == "ValueError" and "rank 1's x1 differs from rank 0's" in got["inputs"][1]
        assert got["weights"][0] == "ValueError" and "rank 1's model differs" in got["weights"][1]
        assert got["index"][0] == "ValueError" and "rank 0 of 2 failed" in got["index"][1]
        assert "belongs to another kernel" in got["index"][1]
        assert got["memory"] == ("MemoryError", "rank 1 of 2 failed: MemoryError: no memory on rank 1"), got["memory"]
        assert got["raises"][0] == "RuntimeError", got["raises"]
        assert "rank 1 of 2 failed: RuntimeError: rank 1 broke after one block" in got["raises"][1]
        exists, done = got["after"]
        assert not exists and 0 < done.count("1") < len(done)   # no kernel at PATH, some blocks kept
        assert rel_err(torch.from_numpy(K), ref) < 1e-12
    assert sum(r[2] for r in results) == done.count("0")          # only the missing blocks, once each
    assert foreign.read_bytes() == before


@pytest.mark.parametrize("ranks", [1, 2])
def test_kernel_larger_than_memory_to_disk_resumes_after_a_kill(tmp_path, ranks):
    path = tmp_path / "K.npy"
    with pytest.raises(RuntimeError, match=f"rank {ranks - 1}: died with exit code -{int(signal.SIGKILL)}"):
        distributed.launch(rank_capped, ranks, str(path), 2, timeout=TIMEOUT)
    assert not path.exists()
    done = store.read_index(path)["done"]
    assert 0 < done.count("1") < len(done)
    results = distributed.launch(rank_capped, ranks, str(path), None, timeout=TIMEOUT)
    for in_memory, computed, shape in results:
        assert in_memory is not None and "memory" in in_memory[1], in_memory    # the cap holds the kernel out
        assert shape == (3600, 3600)
    assert sum(r[1] for r in results) == done.count("0")                    # only the missing blocks, ...
    assert all(r[1] > 0 for r in results)                                   # ... shared by the ranks
    model, x = big_case()
    K = np.load(path, mmap_mode="r")
    assert K.nbytes > 2 * HEADROOM
    assert rel_err(torch.from_numpy(np.array(K)), sl.ntk(model, x)) < 1e-12


def test_bench_distributed_prints_speedup_and_efficiency(capsys):
    """bench --distributed: the same kernel on one process and on two, timed in the same run (no time is
    asserted)."""
    from silentlib import bench
    from silentlib.bench.distributed import format_distributed, run_distributed
    report = run_distributed(2, P=300, width=16, depth=2, d_in=8, dtype="float64", repeats=1, timeout=TIMEOUT)
    assert report["max_rel_diff"] < 1e-12 and report["kernel_bytes"] == 300 * 300 * 8
    text = format_distributed(report)
    assert f"speed-up {report['speedup']:.2f}x, parallel efficiency {report['efficiency']:.0%}" in text
    assert "load average" in text
    with pytest.raises(SystemExit):
        bench.main(["--distributed", "1"])
    assert "at least 2 processes" in capsys.readouterr().err


def test_the_readmes_torchrun_command(tmp_path):
    """scripts/ntk_torchrun.py under torchrun with a c10d rendezvous on 127.0.0.1 (the README's
    several-node command, on one node): the file is the one-process kernel."""
    import socket
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "scripts", "ntk_torchrun.py")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--out", str(tmp_path / "K.npy"), "--P", "40", "--d-in", "5", "--width", "16", "--outputs", "2",
            "--dtype", "float64"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": distributed.loopback(), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                          "--rdzv-id", "test", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                          script, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "computed by 2 ranks" in run.stdout
    module = load_module(script, "ntk_torchrun")
    model, x = module.build(module.parser().parse_args(args))
    assert rel_err(torch.from_numpy(np.load(tmp_path / "K.npy")), sl.ntk(model, x)) < 1e-12
