"""Giving memory back to the system after big, short-lived allocations (glibc's allocator).

A decoded photo, a model's file bytes while it compiles: tens to hundreds of MB used for a
moment. glibc keeps freed memory in its heaps (one arena per thread that allocated it) and,
once a block of some size has been freed, serves blocks up to that size from the heap rather
than from fresh pages (its "dynamic mmap threshold"), so the server's RSS stays at its peak.
`tune_allocator` (at server start) fixes that threshold, so big image buffers always come from
and go back to the system; `return_freed_memory` trims what the heaps hold after a large free.
Both are no-ops where the C library is not glibc.

Measured by bench/bench_upload_memory.py (eight 59-Mpx uploads at once, ResNet152 pack): with
the threshold fixed, RSS after the drafts are gone is back at the baseline (+0-10 MB) and the
baseline after ordinary uploads is ~100 MB lower; a 1 MB threshold made each ordinary upload
~5-8 ms slower (fresh pages) for no memory gained; bounding the arenas (``MALLOC_ARENA_MAX=2``)
changed nothing measurable, so it is not set.
"""
from __future__ import annotations

import ctypes
import functools

# glibc mallopt parameter (malloc.h).
_M_MMAP_THRESHOLD = -3
# Allocations from this size up are mapped from the system and unmapped when freed: the blocks
# of every big image (Pillow allocates in blocks of up to 16 MB); smaller buffers (an ordinary
# upload's) are still reused from the heap, without fresh pages to fault in each time.
MMAP_THRESHOLD = 8 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt      # noqa: B018 - both exist only in glibc
        return libc
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold for this process (see the module docstring); True when set."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))


__all__ = ["return_freed_memory", "tune_allocator"]
