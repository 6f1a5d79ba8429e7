"""Memory-file buffers and their pools: reuse, bounds, and the seals that keep receivers from writing."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import sys

import pytest

from confidential_nb.shared_buffers import MAX_IDLE_BUFFERS, BufferPool, SharedBuffer, capacity_for, has_fixed_size


def test_capacity_rounds_to_pages_then_mebibytes():
    assert capacity_for(0) == mmap.PAGESIZE
    assert capacity_for(mmap.PAGESIZE + 1) == 2 * mmap.PAGESIZE
    assert capacity_for(1024**2) == 1024**2
    assert capacity_for(1024**2 + 1) == 2 * 1024**2


def test_pool_reuses_released_buffer():
    pool = BufferPool(16 * 1024**2, sealed=False)
    first = pool.acquire(3 * 1024**2)
    pool.release(first)
    second = pool.acquire(3 * 1024**2 - 5)
    assert second is first
    pool.release(second)
    pool.clear()


def test_pool_keeps_buffer_until_last_reference():
    pool = BufferPool(16 * 1024**2, sealed=False)
    buffer = pool.acquire(10)
    pool.retain(buffer)
    pool.release(buffer)
    assert pool.free_bytes == 0
    pool.release(buffer)
    assert pool.free_bytes == buffer.capacity
    pool.clear()


def test_pool_closes_buffers_beyond_its_bound():
    pool = BufferPool(3 * 1024**2, sealed=False)
    buffers = [pool.acquire(2 * 1024**2) for _ in range(2)]
    for buffer in buffers:
        pool.release(buffer)
    assert pool.free_bytes == 2 * 1024**2
    with pytest.raises(OSError) as caught:
        os.fstat(buffers[0].fd)
    assert caught.value.errno == errno.EBADF
    pool.clear()


def test_pool_keeps_at_most_max_idle_buffers():
    # Every idle buffer keeps descriptors open, so many small ones must not pile up below the byte bound.
    pool = BufferPool(1024**3, sealed=False)
    buffers = [pool.acquire(pages * mmap.PAGESIZE) for pages in range(1, MAX_IDLE_BUFFERS + 9)]
    for buffer in buffers:
        pool.release(buffer)
    assert pool.idle_buffers == MAX_IDLE_BUFFERS
    with pytest.raises(OSError) as caught:
        os.fstat(buffers[0].fd)
    assert caught.value.errno == errno.EBADF
    pool.clear()


def test_pool_releases_queued_by_finalizers():
    pool = BufferPool(16 * 1024**2, sealed=False)
    buffer = pool.acquire(10)
    pool.release_later(buffer)
    # Queued only: the pool applies the release on its next call.
    assert buffer.references == 1
    assert pool.acquire(10) is buffer
    pool.release(buffer)
    pool.clear()


def test_sealed_pool_scrubs_tail_on_reuse():
    pool = BufferPool(16 * 1024**2, sealed=True)
    buffer = pool.acquire(mmap.PAGESIZE)
    buffer.view(mmap.PAGESIZE)[:] = b"\xff" * mmap.PAGESIZE
    pool.release(buffer)
    reused = pool.acquire(100)
    assert reused is buffer
    assert bytes(reused.mapping[100:]) == bytes(mmap.PAGESIZE - 100)
    pool.release(reused)
    pool.clear()


def test_every_buffer_has_fixed_size():
    for sealed in (False, True):
        buffer = SharedBuffer(mmap.PAGESIZE, sealed=sealed)
        assert has_fixed_size(buffer.fd)
        with pytest.raises(PermissionError):
            os.ftruncate(buffer.fd, 1)
        buffer.close()


def test_plain_memfd_has_no_fixed_size():
    descriptor = os.memfd_create("plain")
    try:
        assert not has_fixed_size(descriptor)
    finally:
        os.close(descriptor)


@pytest.fixture
def sealed_buffer():
    buffer = SharedBuffer(mmap.PAGESIZE, sealed=True)
    buffer.view(5)[:] = b"hello"
    yield buffer
    buffer.close()


def test_receiver_descriptor_cannot_write(sealed_buffer):
    descriptor = sealed_buffer.receiver_descriptor()
    try:
        with pytest.raises(OSError):
            os.pwrite(descriptor, b"X", 0)
        with pytest.raises(OSError):
            mmap.mmap(descriptor, mmap.PAGESIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(OSError):
            os.ftruncate(descriptor, 0)
    finally:
        os.close(descriptor)
    assert bytes(sealed_buffer.mapping[:5]) == b"hello"


def test_reopened_receiver_descriptor_cannot_write(sealed_buffer):
    descriptor = sealed_buffer.receiver_descriptor()
    # A receiver may reopen the file read-write through /proc; the seals still reject every write.
    writable = os.open(f"/proc/self/fd/{descriptor}", os.O_RDWR)
    try:
        with pytest.raises(PermissionError):
            os.pwrite(writable, b"X", 0)
        with pytest.raises(PermissionError):
            mmap.mmap(writable, mmap.PAGESIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(writable)
        os.close(descriptor)
    assert bytes(sealed_buffer.mapping[:5]) == b"hello"


def test_private_mapping_writes_stay_private(sealed_buffer):
    descriptor = sealed_buffer.receiver_descriptor()
    try:
        private = mmap.mmap(descriptor, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(descriptor)
    private[:5] = b"XXXXX"
    assert bytes(private[:5]) == b"XXXXX"
    assert bytes(sealed_buffer.mapping[:5]) == b"hello"
    private.close()


def test_owner_writes_after_sealing(sealed_buffer):
    sealed_buffer.view(5)[:] = b"world"
    descriptor = sealed_buffer.receiver_descriptor()
    try:
        assert os.pread(descriptor, 5, 0) == b"world"
    finally:
        os.close(descriptor)


FILL_BUFFERS = """
import resource
from confidential_nb.shared_buffers import SharedBuffer
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, {hard}))
buffers = [SharedBuffer(4096, sealed=False) for _ in range(60)]
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)
"""


def test_buffers_past_soft_limit_raise_it():
    # Each buffer keeps two descriptors, so 60 of them need more than a soft limit of 64.
    completed = subprocess.run([sys.executable, "-c", FILL_BUFFERS.format(hard="hard")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "True"


def test_buffers_past_hard_limit_explain():
    completed = subprocess.run([sys.executable, "-c", FILL_BUFFERS.format(hard="64")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0
    assert "too many open files" in completed.stderr
    assert "ulimit -n" in completed.stderr
