"""Fixtures of the adversarial suite: one enclave per module and audit-hook variant, and the layer checks.

Every test runs twice: once on an enclave with the runtime audit hook
("hook") and once on an enclave started with ``audit_hook=False`` ("no hook"),
which shows that the outer layers (uid, namespaces, seccomp, limits) hold
without it. Each variant has its own key home, because the sandbox settings
are part of the attested measurements that a key home pins on first use.

A test may skip only through `require_layer`, when the enclave reports the
layer that must stop its attack as inactive. With
``CONFIDENTIAL_NB_REQUIRE_ALL_LAYERS=1`` any skip in this package fails the
whole run, so a machine that lacks a layer cannot pass silently.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave, Sealed

HOOK = "hook"
NO_HOOK = "no hook"
VARIANTS = (HOOK, NO_HOOK)
REQUIRE_ALL_LAYERS_VARIABLE = "CONFIDENTIAL_NB_REQUIRE_ALL_LAYERS"

# Node ids of the tests in this package that skipped, with the reason, in the order they ran.
_skipped_tests: list[str] = []


# Sandbox layers as the enclave reports them.


def layer_active(status: Mapping[str, Any], name: str) -> bool:
    """Return whether `status` (from `Enclave.status`) reports the sandbox layer `name` as active.

    Accepts both shapes of ``status["layers"]``: ``{name: bool}`` and
    ``{name: {"active": bool, "detail": str}}``. A layer missing from the
    report counts as inactive.
    """
    layers = status.get("layers") or {}
    value = layers.get(name)
    if isinstance(value, Mapping):
        return value.get("active") is True
    return value is True


def layer_detail(status: Mapping[str, Any], name: str) -> str:
    """Return the enclave's explanation of the layer's state, or a description of what it reported."""
    value = (status.get("layers") or {}).get(name)
    if isinstance(value, Mapping) and value.get("detail"):
        return str(value["detail"])
    if value is None:
        return "the enclave does not report this layer"
    return f"the enclave reports it as {value!r}"


def require_layer(enclave: Enclave, name: str) -> None:
    """Skip the calling test, with the enclave's detail, unless the sandbox layer `name` is active."""
    status = enclave.status()
    if not layer_active(status, name):
        pytest.skip(f"sandbox layer {name} is inactive: {layer_detail(status, name)}")


# Enclaves of the two variants.


def open_enclave(home: Path, variant: str) -> Enclave:
    """Return an Enclave on `home` with the runtime audit hook on ("hook") or off ("no hook").

    Fails the test when this checkout's Enclave has no ``audit_hook``
    keyword, because running the "no hook" variant with the hook on would
    prove nothing about the outer layers.
    """
    if variant == HOOK:
        return Enclave(home)
    if "audit_hook" not in inspect.signature(Enclave).parameters:
        pytest.fail(
            "Enclave() has no audit_hook keyword in this checkout, so the 'no hook' variant cannot "
            "disable the runtime audit hook; this variant runs once Enclave(home, audit_hook=False) exists",
            pytrace=False,
        )
    # Passed through a dict typed Any, so that type checking passes before the keyword exists.
    options: dict[str, Any] = {"audit_hook": False}
    return Enclave(home, **options)


def _start_checked(home: Path, variant: str) -> Enclave:
    """Open and start an enclave, and fail if the "no hook" variant still reports the audit hook active."""
    enclave = open_enclave(home, variant)
    try:
        enclave.start()
        if variant == NO_HOOK and layer_active(enclave.status(), "audit_hook"):
            pytest.fail("the enclave started with audit_hook=False reports the audit_hook layer as active", pytrace=False)
    except BaseException:
        enclave.close()
        raise
    return enclave


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """The audit-hook variant of the enclaves in this module: "hook" or "no hook"."""
    return str(request.param)


@pytest.fixture(scope="session")
def no_hook_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The key home of the "no hook" enclaves, separate because their measurements differ."""
    return tmp_path_factory.mktemp("key-home-no-hook")


@pytest.fixture(scope="module")
def variant_home(variant: str, key_home: Path, request: pytest.FixtureRequest) -> Path:
    """The key home of this variant: the session's key home for "hook", its own home for "no hook"."""
    if variant == HOOK:
        return key_home
    home: Path = request.getfixturevalue("no_hook_home")
    return home


@pytest.fixture(scope="module")
def enclave(variant: str, variant_home: Path) -> Iterator[Enclave]:
    """One enclave of this module and variant, shared by attacks that leave no state behind."""
    shared = _start_checked(variant_home, variant)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def start_enclave(variant: str, variant_home: Path) -> Iterator[Callable[[], Enclave]]:
    """A factory of fresh, started enclaves of this variant, all closed after the test."""
    started: list[Enclave] = []

    def start() -> Enclave:
        fresh = _start_checked(variant_home, variant)
        started.append(fresh)
        return fresh

    yield start
    for fresh in started:
        fresh.close()


# Sealed inputs holding a secret value.


@pytest.fixture(scope="session")
def secret() -> str:
    """A random value that must never reach the host, so that finding it anywhere proves a leak."""
    return "secret-" + os.urandom(12).hex()


@pytest.fixture(scope="session")
def secret_frame(secret: str) -> pd.DataFrame:
    """A frame whose first row contains `secret`, with enough rows that any raw slice is larger than an aggregate."""
    names = [secret] + [f"row-{index}" for index in range(1, 200)]
    return pd.DataFrame({"name": names, "x": [float(index) for index in range(200)]})


@pytest.fixture(scope="module")
def sealed_secret(enclave: Enclave, secret_frame: pd.DataFrame) -> Sealed:
    """`secret_frame` sealed to this module's enclave, with a private schema and a 256-byte result budget.

    The budget fits an aggregate such as a float but not the raw rows, a
    column or the CSV text of the frame.
    """
    return confidential_nb.seal(
        secret_frame, policy={"schema_public": False, "max_result_bytes": 256}, key=enclave.public_key()
    )


# The session check of CONFIDENTIAL_NB_REQUIRE_ALL_LAYERS.


_PACKAGE_DIRECTORY = Path(__file__).resolve().parent
# Node ids of the collected tests of this package.
_package_nodeids: set[str] = set()


def _skip_reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return f"expected failure: {report.wasxfail}"
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return str(report.longrepr)


def _all_layers_required() -> bool:
    return os.environ.get(REQUIRE_ALL_LAYERS_VARIABLE) == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_PACKAGE_DIRECTORY):
            _package_nodeids.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and report.nodeid in _package_nodeids:
        _skipped_tests.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _all_layers_required() and _skipped_tests and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not (_all_layers_required() and _skipped_tests):
        return
    terminalreporter.section(f"{REQUIRE_ALL_LAYERS_VARIABLE}=1: skipped adversarial tests fail the run", red=True)
    for line in _skipped_tests:
        terminalreporter.line(line)
