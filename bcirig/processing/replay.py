"""Offline replay at full speed on both cores, with results identical to frame-by-frame processing.

Registration is a pure function of the frame and the reference, and its FFTs and matrix products
release the GIL; so frames are registered ahead in a thread pool (each worker with its own scratch
buffers) while the main thread runs extraction, F0, decoder and smoothing in frame order. The
readouts are bit-identical to calling :meth:`Pipeline.process` on each frame in turn.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from bcirig.messages import Readout
from bcirig.processing.pipeline import Motion, Pipeline


def replay(
    pipeline: Pipeline, frames: Iterable[np.ndarray], start_index: int = 0, workers: int = 1, ahead: int = 8
) -> Iterator[Readout]:
    """Readouts of ``frames`` (indices from ``start_index``); ``workers`` registration threads."""
    local = threading.local()

    def motion_of(frame: np.ndarray) -> Motion:
        if not hasattr(local, "reg"):
            local.reg = pipeline.new_registrar()
        return pipeline.register(frame, local.reg)

    pending: deque[tuple[int, np.ndarray, Future[Motion] | None]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="register") as pool:
        it = iter(frames)
        index = start_index
        exhausted = False
        while True:
            while not exhausted and len(pending) < ahead:
                try:
                    frame = next(it)
                except StopIteration:
                    exhausted = True
                    break
                ok = pipeline.check(frame, index) == ""
                pending.append((index, frame, pool.submit(motion_of, frame) if ok else None))
                index += 1
            if not pending:
                return
            i, frame, fut = pending.popleft()
            yield pipeline.process(frame, i, motion=fut.result() if fut is not None else None)
