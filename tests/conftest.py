"""Test session set-up: offline Prefect settings (from the one place that defines them) with a
throwaway PREFECT_HOME, and one Prefect test harness for the whole session."""
from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="unirain-prefect-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", os.path.join(_HOME, "results"))

from flows.prefect_env import configure_offline  # noqa: E402

configure_offline()

import pytest  # noqa: E402

pytest_plugins = [p for p in ("tests.fixtures_models",) if os.path.exists(os.path.join(os.path.dirname(__file__), "fixtures_models.py"))]


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API per pytest session (~9 s to start): request it in tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Model tests on one torch thread: the machine's cores are shared (and spinning threads were slow)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
