"""Moves the wall clock of every Python process started with this folder on PYTHONPATH.

    make test-shifted            # CLOCK_SHIFT_DAYS=400 PYTHONPATH=.ci/clockshift pytest -q

The wall clock (time.time, datetime.now, ...) starts CLOCK_SHIFT_DAYS ahead and keeps ticking.
The monotonic clock is left alone, so timeouts and timed waits behave as usual. Child
processes (the servers the tests start) inherit PYTHONPATH and move too. Redis and
PostgreSQL keep the real clock, as another machine's services would. A suite that passes like
this does not depend on the day it was written.

time-machine is a test dependency; without it the shift cannot be made, and this fails loudly
rather than letting a shifted run pass unshifted.
"""

import os

_days = os.environ.get("CLOCK_SHIFT_DAYS")
if _days:
    import datetime as _dt

    import time_machine as _tm

    _tm.travel(_dt.datetime.now(_dt.UTC) + _dt.timedelta(days=float(_days)), tick=True).start()
