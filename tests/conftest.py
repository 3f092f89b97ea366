"""Shared test settings: float64 by default, and one CPU thread (the problems are tiny, and one
thread is both faster and immune to contention on a small shared machine). Session-scoped, so that
module-scoped fixtures see these settings too. Figures are drawn with the Agg backend and closed
after every test."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def float64_one_thread():
    saved, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(saved)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")
