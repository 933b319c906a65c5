"""ASGI lifespan around Django (which ignores lifespan): start the in-process ledger drainer
(and, where no Celery beat runs, the beat schedule: gateway/inprocbeat.py) on startup; on
shutdown stop them, drain what is left and close the per-process clients."""

from __future__ import annotations

import asyncio

from django.conf import settings

from gateway import configversion, drain, inprocbeat, ledger, probes, runtime

# Why every counter is below the ledger when an embedded process starts: not lost spend.
EMPTY_AT_START = "the embedded Redis stand-in starts empty with each process"


class LifespanApp:
    def __init__(self, app, at_startup=lambda: None) -> None:
        self.app = app
        self.at_startup = at_startup  # the server process's own tuning (gatewaysite/asgi.py)
        self.stop = asyncio.Event()
        self.flusher: asyncio.Task | None = None
        self.watcher: asyncio.Task | None = None
        self.beat: asyncio.Task | None = None
        self.restore_signal = lambda: None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.at_startup()
                self.restore_signal = drain.install(asyncio.get_running_loop())
                if not settings.REDIS_URL:
                    await self.restore_counters()
                else:
                    await probes.warn_at_start()
                if settings.REDIS_URL:  # embedded: one process, told of changes directly
                    self.watcher = asyncio.get_running_loop().create_task(
                        configversion.watch(self.stop)
                    )
                if settings.GATEWAY["LEDGER_IN_PROCESS"]:
                    self.flusher = asyncio.get_running_loop().create_task(
                        ledger.run_flusher(self.stop)
                    )
                if settings.GATEWAY["BEAT_IN_PROCESS"]:
                    self.beat = asyncio.get_running_loop().create_task(inprocbeat.run(self.stop))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def restore_counters(self) -> None:
        """The embedded Redis stand-in starts empty with each process: rebuild the budget
        counters from the ledger so spend recorded earlier (e.g. by `demotraffic`) counts."""
        from budgets.reconcile import rebuild_counters

        await runtime.run_db(
            "ledger",
            lambda: rebuild_counters(redis=runtime.sync_redis(), expected=EMPTY_AT_START),
        )

    async def shutdown(self) -> None:
        self.restore_signal()
        self.stop.set()
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        if self.beat is not None:
            await self.beat  # ends at the stop event, after the task it may be running
        await runtime.close_loop_clients()  # waits for background accounting tasks first
        if self.flusher is not None:
            await self.flusher  # its last drain runs after the stop event
        runtime.close_db_threads()
