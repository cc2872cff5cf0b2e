import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Tests must be deterministic and not oversubscribe the 2 CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (read-only in CI). Tests that need it fail loudly if absent."""
    assert SHARED_DATA.is_dir(), f"missing {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="module")
def dist_cleanup():
    """For tests that start torch.distributed in the pytest process itself:
    tear the process groups down afterwards and restore torch's thread count
    (initialize_distributed sets it to OMP_NUM_THREADS)."""
    import torch

    from megatron_dsm import platform

    threads = torch.get_num_threads()
    yield
    platform.destroy_distributed()
    torch.set_num_threads(threads)
