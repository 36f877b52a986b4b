"""The garbage collector in long-running actor processes (the shard actors).

After startup such a process holds Ray, the drivers and every module of the app: objects that
live as long as the process, which the collector's oldest generation would rescan whenever
enough survivors pile up (a full collection over a Serve replica's startup heap took ~60 ms
here, measured with `gc.callbacks`: long enough to stall every call in flight). Freezing the
startup heap once moves those objects out of the collector's sight (`gc.freeze`); what the
process allocates afterwards is collected as before.

Serve replicas need nothing from us: Serve collects and freezes once a replica has initialised
(`RAY_SERVE_FREEZE_GC_ON_STARTUP`, on by default), after which their full collections took
under a millisecond. The shard actors are plain Ray actors and call `freeze_startup_heap`.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect the garbage of startup, then freeze every object alive now; call once, when the
    process is ready to serve. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
