"""Shared test settings: float64 by default, and one CPU thread (the problems are tiny, and one
thread is both faster and immune to contention on a small shared machine). Session-scoped, so that
module-scoped fixtures see these settings too. Figures are drawn with the Agg backend and closed
after every test. No test reads or writes the user's data cache (silentlib.data.files.CACHE_DIR
points at a temporary folder) or reaches the network: only loopback and file:// URLs are opened."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import urllib.error  # noqa: E402

import silentlib.data.files as data_files  # noqa: E402


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


@pytest.fixture(autouse=True)
def no_user_cache_no_network(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(data_files, "CACHE_DIR", tmp_path_factory.mktemp("user-cache"))
    opener = data_files._urlopen

    def loopback_only(url, timeout):
        if not url.startswith(("http://127.0.0.1", "file:")):
            raise urllib.error.URLError(f"the tests do not reach the network ({url}; tests/conftest.py)")
        return opener(url, timeout)

    monkeypatch.setattr(data_files, "_urlopen", loopback_only)
