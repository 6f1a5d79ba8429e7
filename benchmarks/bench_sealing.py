"""Measure streaming seal and unseal of a large file against a plain file copy.

Usage: python benchmarks/bench_sealing.py [--size-mib N] [--repeats N]

The benchmark writes a random file (1 GiB by default) under a temporary
directory, then times `shutil.copyfile`, `seal_file` and `unseal_file` on it.
Each operation runs in its own spawned child process, so that the child's
``ru_maxrss`` is the peak resident memory of that one operation. It prints
throughput against the copy and peak memory against the file size as ratios,
and deletes every file it wrote. With less than 4 GiB free on the temporary
directory's file system it uses a smaller file and prints a note.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

MIB = 1024**2
DEFAULT_SIZE_MIB = 1024
REQUIRED_FREE_FACTOR = 4


def make_recipient(seeds: tuple[bytes, bytes]) -> tuple[object, object]:
    """Return the (public, HPKE private) key pair that the ML-KEM seed and X25519 private bytes give."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
    from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey

    from confidential_nb.keys import KEM_MLKEM768_X25519, PublicKey

    mlkem_private = mlkem.MLKEM768PrivateKey.from_seed_bytes(seeds[0])
    x25519_private = x25519.X25519PrivateKey.from_private_bytes(seeds[1])
    public = PublicKey(
        kem=KEM_MLKEM768_X25519,
        mlkem768=mlkem_private.public_key().public_bytes_raw(),
        x25519=x25519_private.public_key().public_bytes_raw(),
        signing=bytes(32),
    )
    return public, MLKEM768X25519PrivateKey(mlkem_private, x25519_private)


def _run_operation(operation: str, source: str, target: str, seeds: tuple[bytes, bytes], queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Run one operation in this child process and report its time and peak RSS in bytes."""
    from confidential_nb.sealing import seal_file, unseal_file

    public, private = make_recipient(seeds)
    start = time.perf_counter()
    if operation == "copy":
        shutil.copyfile(source, target)
    elif operation == "seal":
        seal_file(source, target, key=public)  # type: ignore[arg-type]
    elif operation == "unseal":
        unseal_file(source, target, private, public)  # type: ignore[arg-type]
    elif operation != "idle":
        raise ValueError(f"unknown operation {operation!r}")
    elapsed = time.perf_counter() - start
    queue.put((elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def measure(operation: str, source: Path, target: Path, seeds: tuple[bytes, bytes]) -> tuple[float, int]:
    """Return (seconds, peak RSS in bytes) of one operation in a fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_run_operation, args=(operation, str(source), str(target), seeds, queue))
    child.start()
    result = queue.get()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the {operation} child process failed with exit code {child.exitcode}")
    target.unlink(missing_ok=True)
    return result  # type: ignore[no-any-return]


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(MIB, remaining))
            handle.write(block)
            remaining -= len(block)


def choose_size(directory: Path, requested_mib: int) -> int:
    free = shutil.disk_usage(directory).free
    print(f"free space on {directory}: {free / 1024**3:.1f} GiB")
    size = requested_mib * MIB
    if free < REQUIRED_FREE_FACTOR * 1024**3:
        size = min(size, free // (REQUIRED_FREE_FACTOR * 2) // MIB * MIB)
        print(f"NOTE: less than {REQUIRED_FREE_FACTOR} GiB free, so the file is {size // MIB} MiB instead of {requested_mib} MiB")
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=DEFAULT_SIZE_MIB, help="size of the test file in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per operation; the median is reported (default 3)")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sealing-") as scratch:
        directory = Path(scratch)
        size = choose_size(directory, arguments.size_mib)
        source = directory / "plain.bin"
        write_random_file(source, size)
        print(f"file size: {size / MIB:.0f} MiB, chunk size 1 MiB, KEM MLKEM768_X25519, {os.cpu_count()} CPUs")

        from confidential_nb.sealing import seal_file

        seeds = (os.urandom(64), os.urandom(32))
        sealed = directory / "plain.sealed"
        seal_file(source, sealed, key=make_recipient(seeds)[0])  # type: ignore[arg-type]
        inputs = {"copy": source, "seal": source, "unseal": sealed}

        _, idle_rss = measure("idle", source, directory / "idle.out", seeds)
        results = {}
        for operation, operation_input in inputs.items():
            runs = [measure(operation, operation_input, directory / f"{operation}.out", seeds) for _ in range(arguments.repeats)]
            results[operation] = (statistics.median(run[0] for run in runs), max(run[1] for run in runs))

        enclave_report = measure_enclave_run(directory, source)

    copy_seconds = results["copy"][0]
    print(f"peak RSS of an idle child that imported the package: {idle_rss / MIB:.1f} MiB")
    print(f"{'operation':<10} {'time':>9} {'MiB/s':>9} {'time / copy':>12} {'peak RSS':>10} {'RSS above idle':>15} {'above idle / file':>18}")
    for operation, (seconds, peak) in results.items():
        above_idle = max(0, peak - idle_rss)
        print(
            f"{operation:<10} {seconds:8.2f}s {size / MIB / seconds:9.0f} {seconds / copy_seconds:12.2f} "
            f"{peak / MIB:8.1f}Mi {above_idle / MIB:13.1f}Mi {above_idle / size:18.4f}"
        )


    print(enclave_report)


def _peak_rss(pid: int) -> int:
    """Return a process's peak resident set (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def measure_enclave_run(directory: Path, source: Path) -> str:
    """Run a cell on the file sealed to a real enclave; report the monitor's peak memory against the file size."""
    from confidential_nb import Enclave, Sealed
    from confidential_nb.sealing import seal_file

    home = directory / "home"
    with Enclave(home) as enclave:
        sealed_path = directory / "enclave.sealed"
        seal_file(source, sealed_path, key=enclave.public_key())
        monitor = enclave.status()["monitor_pid"]
        before = _peak_rss(monitor)
        started = time.perf_counter()
        length = enclave.run("len(data)", inputs={"data": Sealed.load(sealed_path)}, memory="8G").value
        seconds = time.perf_counter() - started
        after = _peak_rss(monitor)
    size = source.stat().st_size
    assert length == size
    return (f"enclave run on the sealed file: {seconds:.2f}s; monitor peak RSS {after / MIB:.1f} MiB "
            f"(was {before / MIB:.1f} MiB before the run), growth / file size {(after - before) / size:.4f}; "
            "the runner holds the plaintext, as the cell needs it")


if __name__ == "__main__":
    main()
