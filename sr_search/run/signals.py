"""A scheduler's stop (SIGTERM: Slurm's time limit, `scancel`, preemption) taken as Ctrl-C.

`launch` holds `sigterm_as_ctrl_c()` while it runs a study: the first SIGTERM goes down the same path as Ctrl-C -
inside Ray Tune's run, Tune's own SIGINT handler ends the run after saving (every finished row is already written,
paused candidates keep their rung checkpoints), elsewhere a KeyboardInterrupt - and the launch exits 130 saying how
to resume. Later SIGTERMs are ignored (one clean stop; a scheduler that will not wait sends SIGKILL). This also works
where SIGINT itself is ignored, as it is for a background job of a non-interactive shell (an sbatch script's driver).

`ray.init` replaces SIGTERM's handler with its own (`sys.exit(15)`), so the launch calls `arm()` again once Ray is
up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


class SigtermAsCtrlC:
    def __init__(self) -> None:
        self.stopping = False
        self.enabled = threading.current_thread() is threading.main_thread()  # only it may set handlers

    def arm(self) -> None:
        """(Re)install the handler: after anything that installs its own (ray.init)."""
        if self.enabled:
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        # os.write, not print: a handler may run in the middle of a print to the same stream
        os.write(2, b"SIGTERM: stopping as on Ctrl-C (what finished is kept; --resume continues)\n")
        interrupt = signal.getsignal(signal.SIGINT)
        if callable(interrupt):  # Tune's handler during a run, else Python's (KeyboardInterrupt)
            interrupt(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job of a shell) or left to the OS
            raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[SigtermAsCtrlC]:
    handler = SigtermAsCtrlC()
    previous = signal.getsignal(signal.SIGTERM)
    handler.arm()
    try:
        yield handler
    finally:
        if handler.enabled:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
