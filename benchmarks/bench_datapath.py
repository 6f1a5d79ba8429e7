"""Measure sealing a frame and unsealing it in a warm enclave against raw AES-256-GCM on the same bytes.

Usage: python benchmarks/bench_datapath.py [--rows N] [--columns N] [--repeats N] [--scaling]

One repeat of the data path is ``sealed = seal(frame)`` followed by a warm
``Enclave.run`` whose cell receives the frame as a DataFrame and returns
``data.shape``. That result has fewer values than the policy's ``rare_k``
(3 by default), so the egress guard skips its scan of the input for rare
values. docs/benchmarks.md gives the cost of that scan. The baseline encrypts and then
decrypts the frame's bytes with AES-256-GCM in 1 MiB chunks, with
``encrypt_into``/``decrypt_into`` and reused buffers. Repeats alternate
between the two after one warm-up repeat of each, and the best of each
is compared.

Peak memory:
- host: VmHWM of this process (reset through /proc/self/clear_refs before
  each repeat) above the RSS measured before the first repeat, with the
  frame built, minus the sealed blob's size;
- monitor: VmHWM of the monitor process (reset the same way) above its RSS
  before the repeat. That RSS already holds the plaintext buffer of the
  previous repeat, which the host releases in this repeat's request and the
  monitor reuses, so the figure is what the monitor needs beyond the frame;
- runner: after each timed run, an untimed second run on the same input
  (served from the monitor's cache) sums one column and returns its own
  ``ru_maxrss``; the figure is that minus the same on a 100-row frame,
  minus the one column's bytes.
Resetting VmHWM of the monitor needs the rights to write its clear_refs
file (the same user, or root).

With ``--scaling`` it also prints a table for frames of about 10 KB, 1 MB,
100 MB and 1 GB. It needs a key home, so it sets CONFIDENTIAL_NB_HOME to a
new temporary directory unless one is set.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

MIB = 1024**2
CELL = "result = data.shape"
MEMORY_CELL = """
import resource
result = {"rows": data.shape[0], "columns": data.shape[1], "sum": float(data["c0"].sum()),
          "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
"""


def status_bytes(pid: int | str, field: str) -> int:
    """Return a /proc/PID/status field given in kB, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{field} is missing from /proc/{pid}/status")


def reset_peak(pid: int | str) -> None:
    """Reset VmHWM of a process to its current RSS (Linux clear_refs value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def make_frame(rows: int, columns: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.random((columns, rows)).T, columns=[f"c{i}" for i in range(columns)])


def time_raw_aes(payload: memoryview) -> float:
    """Return the seconds to encrypt and then decrypt `payload` in 1 MiB chunks with reused buffers."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(os.urandom(32))
    sealed = bytearray(MIB + 16)
    opened = bytearray(MIB)
    nonce = bytes(12)
    start = time.perf_counter()
    for offset in range(0, len(payload), MIB):
        piece = payload[offset : offset + MIB]
        sealed_piece = memoryview(sealed)[: len(piece) + 16]
        cipher.encrypt_into(nonce, piece, b"", sealed_piece)
        cipher.decrypt_into(nonce, sealed_piece, b"", memoryview(opened)[: len(piece)])
    return time.perf_counter() - start


def frame_bytes(frame: pd.DataFrame) -> memoryview:
    """Return the frame's block as one byte view: the bytes the data path seals, less the small schema."""
    block = frame.values.T
    assert block.flags["C_CONTIGUOUS"]
    return memoryview(block).cast("B")


class DataPath:
    """One warm enclave, and one repeat of seal plus run at a time, with peak memory on each side."""

    def __init__(self, enclave: object) -> None:
        from confidential_nb import Enclave

        assert isinstance(enclave, Enclave)
        self.enclave = enclave
        self.monitor_pid = enclave._process.pid if enclave._process is not None else 0
        self.baseline_runner_rss = self.repeat(make_frame(100, 1))[1]["runner_rss"]
        self.monitor_start_rss = status_bytes(self.monitor_pid, "VmRSS")

    def repeat(self, frame: pd.DataFrame) -> tuple[float, dict[str, int]]:
        """Seal `frame` and run the cell on it; return the seconds and the peak memory figures."""
        import confidential_nb

        gc.collect()
        host_before = status_bytes("self", "VmRSS")
        monitor_before = status_bytes(self.monitor_pid, "VmRSS")
        reset_peak("self")
        reset_peak(self.monitor_pid)
        start = time.perf_counter()
        sealed = confidential_nb.seal(frame)
        run = self.enclave.run(CELL, inputs={"data": sealed})
        elapsed = time.perf_counter() - start
        assert run.value == frame.shape
        value = self.enclave.run(MEMORY_CELL, inputs={"data": sealed}).value
        assert (value["rows"], value["columns"]) == frame.shape
        runner_rss = value["maxrss"]
        figures = {
            "host_peak": status_bytes("self", "VmHWM") - host_before,
            "monitor_peak": status_bytes(self.monitor_pid, "VmHWM") - monitor_before,
            "runner_rss": int(runner_rss),
            "sealed": sealed.nbytes,
            "plaintext": sealed.plaintext_nbytes,
        }
        del sealed, run
        gc.collect()
        return elapsed, figures


def compare(path: DataPath, frame: pd.DataFrame, repeats: int) -> tuple[float, float, dict[str, int]]:
    """Alternate the data path and raw AES `repeats` times after a warm-up of each; return both best times and the last figures.

    The figures also carry the warm-up repeat's time in microseconds under ``first_us``.
    """
    payload = frame_bytes(frame)
    time_raw_aes(payload)
    first, _ = path.repeat(frame)
    ours, baseline = [], []
    figures: dict[str, int] = {}
    for _ in range(repeats):
        elapsed, figures = path.repeat(frame)
        ours.append(elapsed)
        baseline.append(time_raw_aes(payload))
    figures["first_us"] = int(first * 1e6)
    return min(ours), min(baseline), figures


def print_main(path: DataPath, rows: int, columns: int, repeats: int) -> None:
    frame = make_frame(rows, columns)
    size = rows * columns * 8
    ours, baseline, figures = compare(path, frame, repeats)
    print(f"frame {rows} x {columns} float64 ({size / MIB:.1f} MiB), best of {repeats} alternating repeats")
    print(f"seal + warm run (unseal in the enclave)  {ours * 1000:9.1f} ms  {size / ours / 1e9:6.2f} GB/s")
    print(f"raw AES-256-GCM encrypt + decrypt        {baseline * 1000:9.1f} ms  {size / baseline / 1e9:6.2f} GB/s")
    print(f"throughput ratio (raw time / ours)       {baseline / ours:9.3f}   (goal: at least 0.35)")
    print(f"warm-up repeat (pools still empty)       {figures['first_us'] / 1000:9.1f} ms")
    column_bytes = rows * 8
    host_extra = figures["host_peak"]
    monitor_extra = figures["monitor_peak"]
    runner_extra = figures["runner_rss"] - path.baseline_runner_rss - column_bytes
    print("peak memory above the frame and the sealed copy, in units of the frame's size (goal: under 1):")
    print(f"  host     {host_extra / MIB:9.1f} MiB  {host_extra / size:6.3f}x  (VmHWM above RSS before seal; "
          "the pool's buffer is reused as the sealed copy)")
    print(f"  monitor  {monitor_extra / MIB:9.1f} MiB  {monitor_extra / size:6.3f}x  (VmHWM above RSS before, which "
          "already holds the plaintext buffer this repeat reuses)")
    print(f"  runner   {runner_extra / MIB:9.1f} MiB  {runner_extra / size:6.3f}x  (ru_maxrss above a 100-row run, "
          "less the one column the cell reads)")
    from confidential_nb.sealing import host_pool

    retained = status_bytes(path.monitor_pid, "VmRSS") - path.monitor_start_rss
    print("kept between repeats for reuse:")
    print(f"  host pool, idle         {host_pool().free_bytes / MIB:9.1f} MiB")
    print(f"  monitor RSS growth      {retained / MIB:9.1f} MiB  (the last plaintext buffer, cached until the next "
          "request releases it, and the mapping of the host's buffer, whose pages the host pool holds)")


def print_scaling(path: DataPath, repeats: int) -> None:
    print()
    print(f"{'input':>10} {'seal+run':>12} {'raw AES':>10} {'overhead':>10} {'throughput':>12} {'ratio':>7}")
    for label, size in (("10 KB", 10_000), ("1 MB", 1_000_000), ("100 MB", 100_000_000), ("1 GB", 1_000_000_000)):
        rows = max(1, size // (30 * 8))
        frame = make_frame(rows, 30)
        ours, baseline, _ = compare(path, frame, repeats)
        actual = rows * 30 * 8
        print(f"{label:>10} {ours * 1000:10.2f}ms {baseline * 1000:8.2f}ms {(ours - baseline) * 1000:8.2f}ms "
              f"{actual / ours / 1e9:8.3f} GB/s {baseline / ours:7.3f}")
        del frame
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the main frame (default 1,000,000)")
    parser.add_argument("--columns", type=int, default=30, help="float64 columns of the main frame (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of each side (default 3)")
    parser.add_argument("--scaling", action="store_true", help="also print the table for 10 KB to 1 GB")
    arguments = parser.parse_args()
    if arguments.repeats < 3:
        parser.error("--repeats must be at least 3")

    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("CONFIDENTIAL_NB_HOME", home)
        from confidential_nb import Enclave

        with Enclave() as enclave:
            enclave.start()
            path = DataPath(enclave)
            print_main(path, arguments.rows, arguments.columns, arguments.repeats)
            if arguments.scaling:
                print_scaling(path, arguments.repeats)


if __name__ == "__main__":
    main()
