"""Shared fixtures: a private key home for the whole session and one warm enclave."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def key_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point every test at a fresh key home, so no test touches the user's keys."""
    home = tmp_path_factory.mktemp("key-home")
    previous = os.environ.get("CONFIDENTIAL_NB_HOME")
    os.environ["CONFIDENTIAL_NB_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("CONFIDENTIAL_NB_HOME", None)
    else:
        os.environ["CONFIDENTIAL_NB_HOME"] = previous


@pytest.fixture(scope="session")
def enclave(key_home: Path) -> Iterator[object]:
    """One enclave shared by the tests that only need runs to work."""
    from confidential_nb import Enclave

    with Enclave(key_home) as shared:
        yield shared


@pytest.fixture(scope="session")
def unhooked_home(key_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session key home, without its pins, for enclaves started with ``audit_hook=False``.

    Turning the audit hook off changes the sandbox measurement (PCR 2), so
    such an enclave cannot use the session's pins. The keys are the same, so
    data sealed for the session still opens there.
    """
    import shutil

    from confidential_nb import Enclave

    with Enclave(key_home) as started:
        started.status()
    copy = tmp_path_factory.mktemp("unhooked") / "home"
    shutil.copytree(key_home, copy, ignore=shutil.ignore_patterns("pins.json", "enclave.log"))
    return copy


@pytest.fixture(scope="session")
def unhooked_enclave(unhooked_home: Path) -> Iterator[object]:
    """One enclave without the audit hook, for tests of the layers outside the runner's interpreter."""
    from confidential_nb import Enclave

    with Enclave(unhooked_home, audit_hook=False) as shared:
        yield shared


@pytest.fixture(scope="session")
def debug_enclave(key_home: Path) -> Iterator[object]:
    """One debug enclave on the same key home, for the tests of debug runs."""
    from confidential_nb import Enclave

    with Enclave(key_home, debug=True) as shared:
        yield shared
