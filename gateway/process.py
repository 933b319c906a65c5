"""The process's state, in one object: what this worker remembers between requests.

Every piece of memory the gateway keeps across requests (the event loops' clients, the
shared Redis pipelines, the config snapshot, the ledger's spool, the budget windows and the
metric children last used, the throttle's blocked clients, the streams' progress, the key
variables' refusals already logged) is a field of `ProcessState`, built once when the
process starts (at this module's import). The modules that own a piece read it
through `state()` on every use and never keep a reference, so `reset_state()` (what the
tests do before each test) gives the whole process a clean memory in one call.

Kernel: it imports nothing of the gateway. The pieces whose type lives higher up (the
config store) are built by their owner on first use, into their field here.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.configstore import ConfigStore


@dataclass
class Spool:
    """Records that could not reach Redis, waiting in this process for the next drain."""

    items: list[bytes] = field(default_factory=list)


@dataclass(eq=False)
class ProcessState:
    # gateway/runtime.py: each event loop's clients, and the loop asked about last with its
    # clients (a request asks about ten times, from the same loop).
    loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    last_loop: tuple[weakref.ref, Any] | None = None
    # gateway/roundtrip.py: the pipeline a loop turn's round trips join, by loop and client.
    shared_trips: dict[tuple[asyncio.AbstractEventLoop, int], Any] = field(default_factory=dict)
    # gateway/configstore.py: the config snapshot's store (built by `configstore.store()`).
    config: ConfigStore | None = None
    # gateway/ledger.py: records waiting for Redis.
    spool: Spool = field(default_factory=Spool)
    # budgets/windows.py: each time zone's current windows, with the span they hold for.
    windows: dict[str, tuple[float, float, Any]] = field(default_factory=dict)
    # gateway/metrics.py: each metric's child per label values.
    metric_children: dict[tuple, Any] = field(default_factory=dict)
    # gateway/auth.py: clients over their failed-auth limit -> monotonic end of their block.
    blocked_clients: dict[str, float] = field(default_factory=dict)
    # gateway/inflight.py: the streams' progress waiting for the next tick, and the ticker.
    stream_progress: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    progress_ticker: asyncio.Task | None = None
    # gateway/keyvars.py: (provider, variable) refusals already logged.
    refused_key_vars: set[tuple[str, str]] = field(default_factory=set)


_state = ProcessState()


def state() -> ProcessState:
    """This process's state (read it on each use: `reset_state` replaces it)."""
    return _state


def reset_state() -> ProcessState:
    """Replace the process's state with a fresh one (each test starts with one)."""
    global _state
    _state = ProcessState()
    return _state
