"""Line-oriented serial I/O shared by the drivers that talk ASCII lines over a port they are given.

The valve controller and the Zaber lickport both write a command line and read replies into a byte
buffer; what differs is the reply grammar and the error type, which each driver keeps.
"""

from __future__ import annotations

from typing import Any


class SerialLineIO:
    """Mixin: ``_write``, ``_read`` and ``_fail`` over ``self._port`` into ``self._buf``.

    A driver sets ``name`` (said in every error), ``_port`` (pyserial-like: write, flush, in_waiting,
    read), ``_buf`` (a bytearray) and ``error`` (the exception class its callers catch).
    """

    name: str
    _port: Any
    _buf: bytearray
    error: type[Exception] = RuntimeError

    def _fail(self, what: str, exc: BaseException | None = None) -> Exception:
        return self.error(f"{self.name}: {what}" + (f" ({exc})" if exc else ""))

    def _write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            flush = getattr(self._port, "flush", None)
            if flush is not None:
                flush()
        except (OSError, ValueError, TypeError) as exc:  # SerialException is an OSError
            raise self._fail("cannot write to the port; is it unplugged or closed?", exc) from exc

    def _read(self, block: bool) -> None:
        try:
            waiting = self._port.in_waiting
            if waiting or block:
                self._buf += self._port.read(max(1, waiting))
        except (OSError, ValueError, TypeError) as exc:
            raise self._fail("cannot read from the port; is it unplugged or closed?", exc) from exc
