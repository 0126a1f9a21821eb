"""What the operator's console shows, kept as plain data (no Qt): fed bus messages, read by the widget.

Everything here is bounded: traces keep the last ``history`` frames, latencies the last minute (at
most ``LATENCY_MAX`` values per stage), so a long session costs the console no more memory than a
short one. Latency is measured from the ``t_ns`` stamps every message carries (one clock, the rig's
``time.monotonic_ns()``), per stage:

* ``pipeline`` — frame arrival -> readout published (registration, extraction, F0, dF/F, decoder);
* ``bus`` — readout published -> the task received it;
* ``task`` — task in -> feedback out;
* ``frame -> decision`` — frame arrival -> feedback out (the loop's own figure);
* ``valve`` — command out -> the device's acknowledgement.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.messages import (
    Ack,
    Event,
    EventKind,
    Feedback,
    Heartbeat,
    NodeState,
    Outcome,
    OutcomeCounts,
    Readout,
    TrialEnd,
)

HISTORY_FRAMES = 900  # 30 s at 30 Hz
LATENCY_WINDOW_S = 60.0
LATENCY_MAX = 20000  # values per stage kept within the window (a 1 kHz session: the last 20 s)
STAGES = ("pipeline", "bus", "task", "frame -> decision", "valve")


class LatencyWindow:
    """One stage's latencies over the last minute: median and p99 on demand."""

    def __init__(self, window_s: float = LATENCY_WINDOW_S, maxlen: int = LATENCY_MAX) -> None:
        self.window_s = window_s
        self.t: collections.deque[float] = collections.deque(maxlen=maxlen)
        self.ms: collections.deque[float] = collections.deque(maxlen=maxlen)

    def add(self, t_s: float, ms: float) -> None:
        """A latency ``ms`` observed at time ``t_s`` (seconds, monotonic)."""
        if math.isfinite(ms) and ms >= 0:
            self.t.append(t_s)
            self.ms.append(ms)

    def stats(self, now_s: float) -> tuple[int, float, float]:
        """(count, median ms, p99 ms) over the window ending at ``now_s``; NaNs when empty."""
        while self.t and self.t[0] < now_s - self.window_s:
            self.t.popleft()
            self.ms.popleft()
        if not self.ms:
            return 0, float("nan"), float("nan")
        a = np.fromiter(self.ms, np.float64, len(self.ms))
        med, p99 = np.percentile(a, [50, 99])
        return len(a), float(med), float(p99)


def _ms(t_ns: dict[str, int], start: str, end: str) -> float:
    a, b = t_ns.get(start, -1), t_ns.get(end, -1)
    return (b - a) / 1e6 if a > 0 and b > 0 else float("nan")


@dataclass
class NodeHealth:
    """A node's last heartbeat: its state, counters and when it arrived."""

    state: str = "unknown"
    counters: dict[str, int] = field(default_factory=dict)
    seen_s: float = float("nan")


class ConsoleState:
    """The session as the operator sees it, built from the messages the console receives."""

    def __init__(self, *, frame_rate_hz: float = 30.0, history: int = HISTORY_FRAMES, steps: int = 7,
                 clock: Any = time.monotonic) -> None:
        self.rate = frame_rate_hz
        self.steps = steps  # feedback bins between the baseline minimum and the threshold
        self.clock = clock
        self.frames: collections.deque[int] = collections.deque(maxlen=history)
        self.readout: collections.deque[float] = collections.deque(maxlen=history)
        self.dff: collections.deque[np.ndarray] = collections.deque(maxlen=history)
        self.shift: collections.deque[tuple[float, float]] = collections.deque(maxlen=history)
        self.corr: collections.deque[float] = collections.deque(maxlen=history)
        self.threshold = float("nan")
        self.baseline_min = 0.0
        self.outcomes: list[tuple[int, Outcome]] = []  # (trial, outcome) in order
        self.counts = OutcomeCounts()
        self.phase, self.trial, self.state = "waiting", 0, "none"
        self.screen, self.angle_deg, self.sound = "grey", float("nan"), "none"
        self.last_reward_frame = -1
        self.last_feedback_frame = -1
        self.source: dict[str, int] = {}  # the pipeline node's acquisition counters (dropped, rejected ...)
        self.nodes: dict[str, NodeHealth] = {}
        self.latency = {s: LatencyWindow() for s in STAGES}
        self.image: np.ndarray | None = None  # the newest live frame's BCI plane
        self.image_frame = -1
        self.operator_events: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)

    # ------------------------------------------------------------------ counts
    @property
    def trials(self) -> int:
        """Trials ended so far."""
        return self.counts.trials

    @property
    def hits(self) -> int:
        """Hits so far."""
        return self.counts.hits

    def running_hit_rate(self, window: int = 10) -> np.ndarray:
        """Per trial, the fraction of hits among the last ``window`` trials up to it."""
        hits = np.array([o is Outcome.HIT for _, o in self.outcomes], np.float64)
        if not hits.size:
            return hits
        c = np.concatenate([[0.0], np.cumsum(hits)])
        k = np.arange(1, hits.size + 1)
        lo = np.maximum(0, k - window)
        rate: np.ndarray = (c[k] - c[lo]) / (k - lo)
        return rate

    # ------------------------------------------------------------------ input
    def on_readout(self, msg: Readout) -> None:
        """Keep the newest readouts, shifts and registration quality; the pipeline's latency."""
        self.frames.append(msg.frame)
        self.readout.append(msg.readout)
        self.dff.append(np.array(msg.dff, dtype=np.float32))
        s = np.asarray(msg.shift, np.float64).reshape(-1)
        self.shift.append((float(s[0]), float(s[1])) if s.size >= 2 else (float("nan"), float("nan")))
        self.corr.append(float(msg.corr))
        self.latency["pipeline"].add(self.clock(), _ms(msg.t_ns, "source", "published"))

    def on_feedback(self, msg: Feedback) -> None:
        """Phase, trial, what the mouse sees; the task's latencies."""
        self.phase, self.trial, self.state = msg.phase.value, msg.trial, msg.state.value
        self.screen, self.angle_deg, self.sound = msg.screen.value, msg.angle_deg, msg.sound.value
        self.last_feedback_frame = msg.frame
        if msg.reward:
            self.last_reward_frame = msg.frame
        if math.isfinite(msg.threshold):
            self.threshold = msg.threshold
        now = self.clock()
        self.latency["bus"].add(now, _ms(msg.t_ns, "published", "task_in"))
        self.latency["task"].add(now, _ms(msg.t_ns, "task_in", "task_out"))
        self.latency["frame -> decision"].add(now, _ms(msg.t_ns, "source", "task_out"))

    def on_ack(self, msg: Ack) -> None:
        """The valve's round trip."""
        self.latency["valve"].add(self.clock(), _ms(msg.t_ns, "task_out", "device_ack"))

    def on_event(self, msg: Event) -> None:
        """Trial outcomes, calibration, the task's answers to operator commands."""
        if msg.name is EventKind.TRIAL_END:
            outcome = TrialEnd.from_data(msg.data).outcome
            self.outcomes.append((msg.trial, outcome))
            self.counts = self.counts.add(outcome)
        elif msg.name is EventKind.CALIBRATION:
            self.baseline_min = float(msg.data.get("baseline_min", 0.0))
            self.threshold = float(msg.data.get("threshold", float("nan")))
        elif msg.name is EventKind.OPERATOR:
            self.operator_events.append({"frame": msg.frame, **msg.data})

    def on_heartbeat(self, msg: Heartbeat) -> None:
        """A node's health; the pipeline's heartbeat carries the frame source's totals."""
        self.nodes[msg.src] = NodeHealth(state=msg.state.value, counters=dict(msg.counters), seen_s=self.clock())
        if msg.src == "pipeline":
            self.source = dict(msg.counters)

    def on_image(self, frame: int, image: np.ndarray) -> None:
        """The newest live frame's BCI plane (older ones are never drawn)."""
        self.image, self.image_frame = image, frame

    # ------------------------------------------------------------------ views
    def bin_edges(self) -> list[float]:
        """The feedback bins' edges between the baseline minimum (0) and the threshold, readout units."""
        if not math.isfinite(self.threshold) or self.threshold <= 0:
            return []
        return [self.threshold * k / self.steps for k in range(1, self.steps)]

    def latency_rows(self) -> list[tuple[str, int, float, float]]:
        """(stage, count, median ms, p99 ms) over the last minute."""
        now = self.clock()
        return [(s, *self.latency[s].stats(now)) for s in STAGES]

    def health_rows(self) -> list[tuple[str, str, float, dict[str, int]]]:
        """(node, state, seconds since its heartbeat, counters), nodes in name order."""
        now = self.clock()
        return [(n, h.state, now - h.seen_s, h.counters) for n, h in sorted(self.nodes.items())]

    def stopped(self) -> bool:
        """Every node heard from has stopped (the session is over)."""
        return bool(self.nodes) and all(h.state in (NodeState.STOPPED.value, NodeState.FAILED.value)
                                        for n, h in self.nodes.items() if n != "supervisor")
