"""Give the heap that start-up freed back to the operating system.

Building a stage parses large files once (the validator reads SAT's schemas and catalogues,
~60 MB of transient lxml trees); glibc keeps the freed pages mapped, so the process would carry
them as resident memory for its whole life.  ``malloc_trim(0)`` returns them (measured on the
validate stage: 101 -> 73 MB right after start).  A no-op where the C library has no malloc_trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_free_heap() -> bool:
    gc.collect()
    gc.freeze()  # start-up objects live for the whole process: keep them out of every later collection
    return trim_heap()


def tune_collector(young_threshold: int) -> None:
    """The collector examines its youngest generation after ``young_threshold`` net allocations of
    container objects instead of 700 (``Settings.gc_young_threshold``); the older generations keep the
    interpreter's ratios (each collected after ten collections of the one below)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


def trim_heap() -> bool:
    """``malloc_trim(0)`` alone: after a burst of transient objects (a 50,000-file job listing
    left the ingest process at 176 MB for the rest of a run)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl, macOS: nothing to trim this way
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
