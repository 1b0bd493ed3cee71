"""reuse_freed_memory: large freed blocks are reused, not unmapped and faulted in again."""

import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB block (above glibc's largest mmap threshold) several
# times and prints the minor page faults of the repeats after the first.
# malloc itself, as XLA:CPU calls it (NumPy asks the kernel for huge pages instead).
PROBE = """
import ctypes, resource, sys
if sys.argv[1] == "on":
    from w2s_vqa import runtime
    assert runtime.reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def touch_and_free(size=64 << 20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_without_page_faults():
    pages = 4 * (64 << 20) // 4096  # what four fresh 64 MiB blocks fault in
    assert faults("off") > pages // 2  # the default: every block is mapped afresh
    assert faults("on") < pages // 20
