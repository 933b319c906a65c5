"""Draining an instance: from SIGTERM until the process exits, /readyz answers 503, so a load
balancer takes the instance out of rotation before its connections close.

uvicorn's own SIGTERM handler stops accepting connections at once. In each uvicorn process
(each worker under `--workers N`) the lifespan wraps it: the first SIGTERM only marks the
process as draining and hands the signal on to uvicorn `GATEWAY_DRAIN_S` seconds later.
Meanwhile every request is served as usual and /readyz says `draining`. More SIGTERMs in
that time change nothing: a worker often gets two (systemd signals every process of the
unit, and uvicorn's supervisor passes its own on). SIGINT (Ctrl+C) stops at once. Then
uvicorn's graceful shutdown lets the requests in flight finish (up to
`--timeout-graceful-shutdown`) and the lifespan flushes the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from django.conf import settings

log = logging.getLogger(__name__)

_draining = threading.Event()


def draining() -> bool:
    return _draining.is_set()


def start_draining() -> None:
    _draining.set()


def install(loop: asyncio.AbstractEventLoop):
    """Wrap uvicorn's SIGTERM handler (when this process runs under uvicorn, in its main
    thread). Returns a function that puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    owner = getattr(previous, "__self__", None)
    if not callable(previous) or not type(owner).__module__.startswith("uvicorn"):
        return lambda: None  # not uvicorn's handler (a test, another server): leave it
    delay = float(settings.GATEWAY["DRAIN_S"])

    def on_sigterm(signum, frame) -> None:
        if delay <= 0:
            start_draining()
            previous(signum, frame)
            return
        if draining():
            return  # already on its way out, at the time set by the first SIGTERM
        start_draining()
        # A signal handler may only hand work to the loop thread-safely.
        loop.call_soon_threadsafe(_later, signum)

    def _later(signum) -> None:
        log.info("SIGTERM: draining, /readyz answers 503; shutting down in %g s", delay)
        loop.call_later(delay, previous, signum, None)

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)
