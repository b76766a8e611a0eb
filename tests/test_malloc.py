"""keep_freed_memory: MB-sized buffers freed and made again cost no page faults once tuned.

Each case runs in a fresh interpreter (the tuning is process-wide) and does what a cold
encrypted segment does (packaging/crypto/progressive.py): a fresh zeroed 2.5 MB bytearray,
filled, sent and dropped, forty times; it counts the minor page faults that took."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import os, resource, sys
from mediaorigin.malloc import keep_freed_memory
print(keep_freed_memory(int(sys.argv[1])))
segment = os.urandom(2_500_000)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(40):
    out = bytearray(len(segment) + 16)
    out[: len(segment)] = segment
    del out
print(faults() - before)
"""
PAGES = 2_500_000 // 4096  # a buffer's pages


def faults_with(keep_mb: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(keep_mb)], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_tuned_malloc_reuses_freed_segment_buffers() -> None:
    applied, faults = faults_with(128)
    assert applied == "True"
    assert faults < 4 * PAGES  # the first buffer or two fault in; the rest reuse them


def test_zero_keeps_glibc_defaults() -> None:
    applied, faults = faults_with(0)
    assert applied == "False"
    assert faults > 30 * PAGES  # glibc unmaps each freed buffer: every new one faults in
