"""Line-oriented serial I/O shared by the drivers that talk ASCII lines over a port they are given.

The valve controller and the Zaber lickport both write a command line and read replies into a byte
buffer; what differs is the reply grammar and the error type, which each driver keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class SerialLineIO:
    """Mixin: ``_write``, ``_read`` and ``_fail`` over ``self._port`` into ``self._buf``.

    A driver sets ``name`` (said in every error), ``_port`` (pyserial-like: write, flush, in_waiting,
    read), ``_buf`` (a bytearray) and ``error`` (the exception class its callers catch).
    """

    name: str
    _port: Any
    _buf: bytearray
    _closed: bool
    retries: int
    error: type[Exception] = RuntimeError

    def _close_safely(self, make_safe: Callable[[], object], what: str) -> None:
        """Leave the device safe (one try, no retries: the port may be gone), then close the port; twice is
        harmless. A failure is logged, never raised: closing must always release the port."""
        if self._closed:
            return
        retries, self.retries = self.retries, 0
        try:
            make_safe()
        except self.error as exc:
            log.warning("%s: could not %s before closing the port: %s", self.name, what, exc)
        finally:
            self.retries = retries
            self._closed = True
            try:
                self._port.close()
            except OSError as exc:
                log.warning("%s: closing the port failed: %s", self.name, exc)

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
