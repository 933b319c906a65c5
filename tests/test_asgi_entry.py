"""The production ASGI entry point tunes the cyclic GC for a long-lived server process, at
its lifespan's startup: importing the module (as the tests' in-process gateway does) leaves
the importing process's GC alone."""

import gc
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IN_A_SERVER = """
import gc
from gatewaysite import asgi
asgi.application.at_startup()  # what uvicorn's lifespan startup runs first
print(gc.get_freeze_count(), *gc.get_threshold())
"""


def test_importing_the_entry_point_leaves_the_process_gc_alone():
    threshold = gc.get_threshold()
    frozen = gc.get_freeze_count()
    from gatewaysite import asgi  # imported by uvicorn in production

    assert asgi.application.at_startup is asgi.tune_gc
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == frozen


def test_the_server_process_freezes_its_startup_objects_and_collects_young_ones_rarely():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SECRET_KEY": "test-secret", "DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-c", IN_A_SERVER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    frozen, *threshold = map(int, out[-4:])
    assert frozen > 10_000  # Django and the apps, out of every full pass
    assert threshold == [10_000, 20, 20]
