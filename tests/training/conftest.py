import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import write_corpus  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """A learnable synthetic indexed dataset (vocab 256), written once."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "syn")
