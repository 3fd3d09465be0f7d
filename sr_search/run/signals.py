"""A scheduler's stop (SIGTERM: Slurm's time limit, `scancel`, preemption) taken as Ctrl-C.

`launch` holds `sigterm_as_ctrl_c()` while it runs a study: the first SIGTERM goes down the same path as Ctrl-C -
inside Ray Tune's run, Tune's own SIGINT handler ends the run after saving (every finished row is already written,
paused candidates keep their rung checkpoints), elsewhere a KeyboardInterrupt - and the launch exits 130 saying how
to resume. Later SIGTERMs are ignored (one clean stop; a scheduler that will not wait sends SIGKILL). This also works
where SIGINT itself is ignored, as it is for a background job of a non-interactive shell (an sbatch script's driver).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    stopping = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # os.write, not print: a handler may run in the middle of a print to the same stream
        os.write(2, b"SIGTERM: stopping as on Ctrl-C (what finished is kept; --resume continues)\n")
        interrupt = signal.getsignal(signal.SIGINT)
        if callable(interrupt):  # Tune's handler during a run, else Python's (KeyboardInterrupt)
            interrupt(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job of a shell) or left to the OS
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
