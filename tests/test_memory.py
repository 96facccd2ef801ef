"""scopeline.memory: freed frames go back to the system (glibc), so a stage starts from what is alive."""

import platform
import subprocess
import sys

import pytest

CHILD = r"""
import sys
import numpy as np
from scopeline import memory

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

big = [np.ones(3_000_000) for _ in range(3)]  # 24 MB each: freed, they raise glibc's own threshold
del big
before = rss()
frames, survivors = [], []
for _ in range(300):
    frames.append(np.ones(608 * 608))  # 2.8 MiB each, 850 MiB in all
    survivors.append(np.ones(1000))  # a small array above each: the heap cannot shrink from its top
del frames
after = rss()
memory.trim()
print(before, after, rss())
"""


def _run() -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    return tuple(float(v) for v in out.stdout.split())


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc",
                    reason="scopeline.memory acts on glibc's allocator only")
def test_trim_returns_freed_frames_that_the_heap_kept():
    before, after, trimmed = _run()
    assert after - before > 500, "the allocator returned the frames itself: this test no longer tests trim"
    assert trimmed - before < 100, f"trim left {trimmed - before:.0f} MiB of freed frames resident"
