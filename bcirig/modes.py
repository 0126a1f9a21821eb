"""How a session's processes are paced (``bcirig run --mode``): one small enum, importable without the runtime.

The command line builds its parser from it before anything heavy is imported; the supervisor and the
nodes (``NodeSpec.mode``) dispatch on its members.
"""

from __future__ import annotations

import enum

__all__ = ["RunMode"]


class RunMode(enum.StrEnum):
    """Realtime or lockstep; a result that differs between them is a bug (ARCHITECTURE.md)."""

    REALTIME = "realtime"  # the source paced at the imaging rate
    LOCKSTEP = "lockstep"  # the simulated source waits for the task's verdict on each frame: deterministic
