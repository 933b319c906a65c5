"""A config load that is already done when `_reload` registers its callback (a fast
database thread) runs `_store` at once, which clears `_inflight`: `_reload` must still hand
back the load it started, or the first request after a cold start gets a 500."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from gateway import runtime
from gateway import snapshot as snapshots


@pytest.mark.django_db
def test_a_load_done_before_its_callback_is_still_returned(monkeypatch):
    def done_at_once(lane, fn, *args):
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    monkeypatch.setattr(runtime, "submit_db", done_at_once)
    store = snapshots.ConfigStore()
    future, started = store._reload()
    assert future.done() and started > 0
    assert store._snapshot is future.result()
