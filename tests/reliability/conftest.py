"""Fixtures for the reliability tests."""

from __future__ import annotations

import pytest

from rel_testlib import fast_dir, remove_fast_dirs


@pytest.fixture
def scratch(tmp_path):
    """A scratch directory on tmpfs when available (see rel_testlib.fast_dir), removed after."""
    yield fast_dir(tmp_path)
    remove_fast_dirs()
