"""Shared test settings: float64 by default, and one CPU thread (the problems are tiny, and one
thread is both faster and immune to contention on a small shared machine). Session-scoped, so that
module-scoped fixtures see these settings too."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def float64_one_thread():
    saved, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(saved)
    torch.set_num_threads(threads)
