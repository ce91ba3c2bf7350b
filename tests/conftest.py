import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DLSETUP_FIXTURES", REPO.parent / "shared" / "fixtures"))
H100_BUNDLE = FIXTURES / "bundles" / "h100-ubuntu2404"
PUBLIC = FIXTURES / "public"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"real captures not found at {FIXTURES} (set DLSETUP_FIXTURES)")
    return FIXTURES
