"""Environment attacks: read a variable planted in the host process, directly or through /proc."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from confidential_nb import Enclave

from .conftest import require_layer
from .support import ANCESTORS, assert_usable

PLANTED_VARIABLE = "CONFIDENTIAL_NB_ADVERSARIAL_PLANTED"


def test_planted_variable_not_in_environ(
    enclave: Enclave, start_enclave: Callable[[], Enclave], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_layer(enclave, "clean_environment")
    token = os.urandom(16).hex()
    monkeypatch.setenv(PLANTED_VARIABLE, token)
    fresh = start_enclave()

    environment = fresh.run("import os\nresult = dict(os.environ)", timeout=10).value

    assert PLANTED_VARIABLE not in environment
    assert not any(token in value for value in environment.values())
    assert_usable(fresh)


def test_host_environ_via_proc(enclave: Enclave) -> None:
    # Three levels up from the runner: the zygote, the monitor and this test process.
    require_layer(enclave, "pid_namespace")
    # Compared as digests, so a failure does not print this process's environment.
    host_environment = Path("/proc/self/environ").read_bytes()
    assert len(host_environment) > 0, "the test process has an empty environment, so the attack has nothing to find"
    host_digest = hashlib.sha256(host_environment).hexdigest()
    source = ANCESTORS + """
import hashlib
found = []
for pid in ancestors(levels=3):
    try:
        with open(f'/proc/{pid}/environ', 'rb') as handle:
            found.append(hashlib.sha256(handle.read()).hexdigest())
    except OSError:
        pass
result = found
"""

    digests = enclave.run(source, timeout=10).value

    assert host_digest not in digests
    assert_usable(enclave)
