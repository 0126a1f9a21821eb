"""The console's way in: a receiver thread that never holds anything back, and ``bcirig console``.

:class:`ConsoleLink` reads the console's subscriptions on its own thread, all the time, whatever the
window is doing (drawing, a dialog open, a slow machine), so the publishers' queues for the console
stay empty and nothing piles up in the loop's processes. It keeps what the window needs and drops the
rest, for display only: the newest live image (an older one is never drawn), and the newest
``QUEUE`` other messages (a slower window skips the oldest; counted in ``dropped``). The window
takes them on its own schedule (:meth:`ConsoleLink.take`).

:func:`attach_main` is ``bcirig console SESSION_DIR``: it attaches to a running session through the
``endpoints.json`` the supervisor writes in the session folder, with the same window and controls.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from typing import Any

import numpy as np
import zmq

from bcirig.bus import Subscriber
from bcirig.messages import Frame, Message, Topic

QUEUE = 2000  # messages kept for the window; the oldest go first
POLL_MS = 100
IMAGE_HZ = 5.0  # live images taken per second: the subscription to frames is opened for one frame at a time


class ConsoleLink:
    """Subscribes to ``endpoints`` on a thread; the window takes the newest image and messages."""

    def __init__(self, endpoints: list[str], topics: list[str], *, plane: int = 0, queue: int = QUEUE,
                 image_hz: float = IMAGE_HZ) -> None:
        self.endpoints, self.topics, self.plane = list(endpoints), list(topics), plane
        self.image_period_s = 1.0 / image_hz
        self.frame_skips = 0  # frames not taken between images (by design; not counted as gaps)
        self.images = 0
        self.messages: collections.deque[Message] = collections.deque(maxlen=queue)
        self.image: tuple[int, np.ndarray] | None = None
        self.received = self.dropped = self.gaps = self.wire_errors = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-link", daemon=True)

    def start(self) -> None:
        """Start receiving (returns once the socket is connected)."""
        self._thread.start()
        self._ready.wait(5.0)

    def stop(self) -> None:
        """Stop receiving and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def take(self) -> tuple[list[Message], tuple[int, np.ndarray] | None]:
        """Everything received since the last call, and the newest image (None if no new one)."""
        out = []
        while self.messages:
            out.append(self.messages.popleft())
        image, self.image = self.image, None
        return out, image

    def _run(self) -> None:
        ctx = zmq.Context()
        sub = Subscriber(ctx, self.endpoints, self.topics, rcvhwm=QUEUE)
        self._ready.set()
        # Frames are large and the window shows a few a second: the subscription to them is opened for
        # one frame, closed, and opened again IMAGE_HZ later, so publishers send the console no others.
        frames = Topic.FRAME.value in self.topics
        taking, next_image = frames, 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if frames and not taking and now >= next_image:
                    sub.sock.setsockopt(zmq.SUBSCRIBE, Topic.FRAME.value.encode())
                    taking = True
                wait = POLL_MS if taking or not frames else min(POLL_MS, max(1, int((next_image - now) * 1000)))
                if not sub.sock.poll(wait):
                    continue
                for _ in range(10000):
                    gaps = sub.gaps
                    msg = sub.recv()
                    if msg is None:
                        break
                    if isinstance(msg, Frame):
                        self.frame_skips += sub.gaps - gaps
                        self.images += 1
                        sub.gaps = gaps
                        data = msg.data
                        self.image = (msg.frame, data[min(self.plane, data.shape[0] - 1)] if data.ndim == 3 else data)
                        if taking:
                            sub.sock.setsockopt(zmq.UNSUBSCRIBE, Topic.FRAME.value.encode())
                            taking, next_image = False, time.monotonic() + self.image_period_s
                        continue
                    if len(self.messages) == self.messages.maxlen:
                        self.dropped += 1
                    self.messages.append(msg)
                self.received, self.gaps, self.wire_errors = sub.received, sub.gaps, len(sub.wire_errors)
        finally:
            sub.close()
            ctx.destroy(linger=0)

    def counters(self) -> dict[str, int]:
        """What the link received, dropped for display, and the gaps it counted."""
        return {"link_received": self.received, "link_dropped": self.dropped, "link_gaps": self.gaps,
                "link_wire_errors": self.wire_errors, "link_images": self.images,
                "link_frames_skipped": self.frame_skips}


def feed(window: Any, messages: list[Message], image: tuple[int, np.ndarray] | None) -> None:
    """Hand what the link took to the window (wiring only)."""
    from bcirig.messages import Ack, Event, Feedback, Heartbeat, Readout

    for msg in messages:
        if isinstance(msg, Readout):
            window.on_readout(msg)
        elif isinstance(msg, Feedback):
            window.on_feedback(msg)
        elif isinstance(msg, Event):
            window.on_event(msg)
        elif isinstance(msg, Ack):
            window.on_ack(msg)
        elif isinstance(msg, Heartbeat):
            window.on_heartbeat(msg)
    if image is not None:
        window.on_image(*image)


def refresh_interval_s(app: Any, cap_hz: float = 30.0) -> float:
    """Redraw period: at most the screen's refresh rate, and at most ``cap_hz``."""
    screen = app.primaryScreen() if app is not None else None
    hz = float(screen.refreshRate()) if screen is not None and screen.refreshRate() > 0 else 60.0
    return 1.0 / min(hz, cap_hz)


def attach_main(folder: str, *, exit_when_done: bool = True) -> int:
    """``bcirig console SESSION_DIR``: the console attached to the session running there."""
    from PyQt6.QtCore import QTimer

    from bcirig.config import load_protocol
    from bcirig.control_plane import Answer, encode_request, find_session
    from bcirig.gui.console import Console
    from bcirig.gui.display import application
    from bcirig.setup import Setup

    info = json.loads(find_session(folder).read_text())
    protocol = load_protocol(info["protocol_path"])
    app = application()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, f"console-{os.getpid()}".encode())
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(info["control"])
    def send(command: str, value: float) -> None:
        dealer.send_multipart(encode_request(command, value))

    window = Console(title=protocol.protocol.name, frame_rate_hz=protocol.imaging.frame_rate_hz,
                     steps=protocol.feedback.steps, send=send)
    setup = Setup.load(info["setup_path"])
    window.set_setup(setup.roi_set(), setup.reference, protocol.imaging.bci_plane)
    topics = [Topic.READOUT, Topic.FEEDBACK, Topic.EVENT, Topic.FRAME, Topic.ACK, Topic.HEARTBEAT]
    link = ConsoleLink(list(info["nodes"].values()), [str(t) for t in topics], plane=protocol.imaging.bci_plane)
    link.start()
    window.show()
    started = time.monotonic()
    done = {"why": ""}

    def tick() -> None:
        feed(window, *link.take())
        while dealer.poll(0):
            window.on_answer(Answer.decode(dealer.recv_multipart()))
        window.refresh()
        beat = window.data.nodes.get("supervisor")
        quiet = time.monotonic() - (beat.seen_s if beat else started)
        if window.data.stopped() or quiet > 5.0:
            done["why"] = "the session ended" if window.data.stopped() else "no heartbeat from the supervisor for 5 s"
            if exit_when_done:
                app.quit()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(int(refresh_interval_s(app) * 1000))
    print(f"bcirig: console attached to {info['setup_path'].rsplit('/', 1)[0]}", file=sys.stderr)
    try:
        app.exec()
    finally:
        timer.stop()
        link.stop()
        dealer.close()
        ctx.destroy(linger=0)
    if done["why"]:
        print(f"bcirig: console: {done['why']}", file=sys.stderr)
    return 0

