"""Fixtures shared by the persistence tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database, once per dialect."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
