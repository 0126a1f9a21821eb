"""A private X server (Xvfb) for headless OpenGL: the display benchmark and the display tests start one.

Xvfb picks a free display number itself and writes it to a pipe once it accepts connections
(``-displayfd``), so starting one waits on that event, never on a guessed delay. Mesa's llvmpipe then
gives Qt (``xcb``, or ``offscreen``, which makes GLX contexts when an X display is there) OpenGL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from types import TracebackType


class XvfbError(RuntimeError):
    """Xvfb is not installed or did not start."""


class Xvfb:
    """``with Xvfb() as display:`` -> ``":N"``; the server is stopped on exit."""

    def __init__(self, width: int = 1280, height: int = 800, timeout_s: float = 20.0) -> None:
        self.size = (width, height)
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""

    def start(self) -> str:
        """Start the server; returns its display name (``":N"``)."""
        exe = shutil.which("Xvfb")
        if exe is None:
            raise XvfbError("Xvfb is not installed (Debian/Ubuntu: apt-get install xvfb)")
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [exe, "-displayfd", str(write_fd), "-screen", "0", f"{self.size[0]}x{self.size[1]}x24",
                 "-nolisten", "tcp", "-noreset"],
                pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            import select

            ready, _, _ = select.select([pipe], [], [], self.timeout_s)
            number = pipe.readline().strip() if ready else b""
        if not number:
            code = self.proc.poll()
            self.stop()
            raise XvfbError(f"Xvfb did not start within {self.timeout_s:.0f} s"
                            + (f" (it exited with status {code})" if code is not None else ""))
        self.display = f":{number.decode()}"
        return self.display

    def stop(self) -> None:
        """Stop the server (it is ours: terminate, then wait)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
