"""bench --training (silentlib.bench.training): the old loop it times is gradient descent as train does
it, every way trains every sweep, and the table shows each way's ratio to the loop."""
import numpy as np
import torch

import silentlib as sl
from silentlib.bench import training


def test_the_old_loop_records_what_train_records():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=g), torch.randn(10, generator=g)
    torch.manual_seed(1)
    a = sl.MLP(4, 6, 3, activation="tanh", sigma=0.7)
    b = sl.MLP(4, 6, 3, activation="tanh")
    b.load_state_dict(a.state_dict())
    losses = training.loop_train(a, x, y, lr=0.05, t_max=3.0, n_records=15, track_ntk=True)
    tr = sl.train(b, x, y, lr=0.05, t_max=3.0, n_records=15)
    np.testing.assert_allclose(losses, tr.loss, rtol=1e-11)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)


def test_every_way_trains_a_sweep_and_the_table_has_its_ratios(monkeypatch):
    task = sl.data.linear_teacher(12, 5, s=1.0, seed=0)
    tiny = training.Sweep("tiny", lambda: training._nets(0, lambda s: sl.MLP(5, 4, 2, sigma=s), [0.1, 0.3]),
                          task.x, task.y, 0.05, [1.0, 2.0], 10, True)
    monkeypatch.setattr(training, "sweeps", lambda full: [tiny])
    report = training.run_training_bench(device="cpu", verbose=False)
    row = report["rows"][0]
    assert set(training.WAYS) <= set(row) and all(row[w] > 0 for w in training.WAYS)
    assert set(row["step"]) == {"loop", "gd", "gd, together"}
    table = training.format_training(report)
    assert "tiny" in table and f"{row['loop'] / row['flow']:.1f}" in table
