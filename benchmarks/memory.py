"""Peak resident memory of a block of code, on CPU (and CUDA when used).

CPU tensors do not show in ``torch.cuda.max_memory_allocated`` and bypass
``tracemalloc``, so a background thread samples the process's resident set
size every millisecond. The figure is the peak RSS above the RSS at entry.

That is only honest if freed tensor memory goes back to the OS: glibc's
malloc raises its mmap threshold after the first large free, after which big
buffers come from (and stay in) the heap, and a later measurement would reuse
them and report nothing. Memory is therefore measured in a process started
with :data:`EXACT_RSS_ENV` (a fixed ``MALLOC_MMAP_THRESHOLD_`` also disables
that dynamic adjustment), so every buffer over 64 KiB is mapped and unmapped.
"""

from __future__ import annotations

import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class PeakMemory:
    """``with PeakMemory() as m: ...``; then ``m.peak_mib`` (MiB above the RSS at entry)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak_mib = 0.0

    def __enter__(self) -> PeakMemory:
        self._base = rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, rss_bytes())
        self.peak_mib = (self._peak - self._base) / 2**20


#: Environment under which RSS tracks tensor memory exactly (see the module docstring).
#: It slows allocation-heavy code several times over, so time nothing under it.
EXACT_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def exact_rss_active() -> bool:
    return all(os.environ.get(k) == v for k, v in EXACT_RSS_ENV.items())
