"""Attacks on a cached input: a cell writes to its input's memory and descriptors, and the next run checks the data.

The monitor keeps an opened input's plaintext in a sealed memory file and
maps it into each runner copy-on-write. A cell that writes to its frame, its
frame's buffers, any descriptor it can find or the file behind its mapping
must not change what a later run of the same cached input receives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave

from .support import ATTEMPT, assert_usable

# Every way the cell has to reach the plaintext's memory, each reported by `attempt`.
WRITE_CELL = ATTEMPT + """
import mmap, os
import numpy as np

outcomes = {}

def set_frame():
    data.iloc[0, 0] = -1.0
    data["a"] = 0.0
    return "written"

def set_values():
    np.asarray(data._mgr.blocks[0].values)[:] = -2.0
    return "written"

def write_descriptors():
    written = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("/memfd:"):
            for attack in (lambda: os.pwrite(fd, b"\\0" * 8, 0),
                           lambda: mmap.mmap(fd, 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE | mmap.PROT_READ)):
                written.append(attempt(attack))
    return written

def write_mapped_files():
    written = []
    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps if "memfd:" in line]
    for fields in regions:
        path = "/proc/self/map_files/" + fields[0]
        written.append(attempt(lambda: os.open(path, os.O_RDWR)))
        reopened = attempt(lambda: os.open(path, os.O_RDONLY))
        if isinstance(reopened, int):
            written.append(attempt(lambda: mmap.mmap(reopened, 4096, flags=mmap.MAP_SHARED,
                                                     prot=mmap.PROT_WRITE | mmap.PROT_READ)))
    return written

for name, action in (("frame", set_frame), ("values", set_values), ("descriptors", write_descriptors),
                     ("map_files", write_mapped_files)):
    outcomes[name] = str(attempt(action))[:200]
result = outcomes
"""

CHECK_CELL = """
import pandas as pd
pd.testing.assert_frame_equal(data, original)
True
"""


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])


def test_cell_cannot_change_cached_input(enclave: Enclave, frame: pd.DataFrame) -> None:
    sealed = confidential_nb.seal(frame, key=enclave.public_key())
    enclave.run(WRITE_CELL, inputs={"data": sealed}, timeout=30)
    # The second run gets the input by handle from the cache, so it maps the same memory file.
    assert enclave._input_handles.handles_for({"data": sealed})

    assert enclave.run(CHECK_CELL, inputs={"data": sealed}, params={"original": frame}, timeout=30).value is True
    assert_usable(enclave)


def test_cell_writes_stay_in_its_own_copy(enclave: Enclave, frame: pd.DataFrame) -> None:
    sealed = confidential_nb.seal(frame, key=enclave.public_key())
    source = "data.iloc[0, 0] = 12345.0\nnp_sum = float(data['a'].sum())\nnp_sum"
    changed = enclave.run(source, inputs={"data": sealed}, timeout=30).value
    assert changed == pytest.approx(frame["a"].sum() - frame.iloc[0, 0] + 12345.0)
    unchanged = enclave.run("float(data['a'].sum())", inputs={"data": sealed}, timeout=30).value
    assert unchanged == pytest.approx(frame["a"].sum())
