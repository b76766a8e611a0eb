"""tuning.py. keep_freed_memory: MB-sized buffers freed and made again cost no page faults once
tuned; freeze_startup_objects: a full collection no longer walks the app's startup objects.

Each case runs in a fresh interpreter (the tuning is process-wide) and does what a cold
encrypted segment does (packaging/crypto/progressive.py): a fresh zeroed 2.5 MB bytearray,
filled, sent and dropped, forty times; it counts the minor page faults that took."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import os, resource, sys
from mediaorigin.tuning import keep_freed_memory
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


FREEZE = """
import gc
from mediaorigin.app import create_app
from mediaorigin.config import Config
from mediaorigin.tuning import freeze_startup_objects
app = create_app(Config.load(None, env={"MEDIAORIGIN_DEMO_ENABLED": "false"}))
before = len(gc.get_objects())
freeze_startup_objects()
print(before, len(gc.get_objects()), gc.get_freeze_count())
"""


def test_startup_objects_are_out_of_the_collectors_reach() -> None:
    """What a full collection would walk after startup: the app's objects are frozen."""
    before, after, frozen = map(int, subprocess.run(
        [sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True,
    ).stdout.split())
    assert before > 50_000  # an origin's modules and app: what every full collection walked
    assert after < 100  # left for the collector after the freeze
    assert frozen >= before - 1_000
