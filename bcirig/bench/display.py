"""The mouse display's latency: a feedback message's arrival at the display node to the buffer swap.

The real display node runs in its own process (``python -m bcirig.nodes``, OpenGL through Xvfb when
no ``DISPLAY`` is set: one is started for the run); this process plays the supervisor (heartbeats,
READY, START, STOP) and the task: it publishes a feedback message every imaging frame whose grating
angle differs from the frame before (the worst case: every frame a change to draw), and collects the
node's ``Presentation`` records. Measured per change:

* ``arrival_to_swap``: ``t_presented_ns - t_update_ns``, the node's own path (draw, swap);
* ``publish_to_swap``: from the task's ``task_out`` stamp, so the ZeroMQ hop and any wait for the
  node's loop count too.

The target is one refresh at 60 Hz (16.7 ms) at p99; the ratio of p99 to the refresh period is
reported beside it. Xvfb has no refresh to wait for, so its swaps return at once: on a monitor with
``swap_interval = 1`` the swap waits for the next vertical blank, up to one refresh more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bcirig.bench.common import bench_protocol_text
from bcirig.bus import Publisher, Subscriber, endpoints
from bcirig.config import BusConfig
from bcirig.messages import (
    Control,
    ControlAction,
    Feedback,
    Heartbeat,
    Log,
    LogLevel,
    NodeState,
    Phase,
    Presentation,
    Screen,
    TrialState,
)
from bcirig.nodes import NodeSpec

REFRESH_MS = 1000.0 / 60.0
TARGET = {"p99_ms": REFRESH_MS}
RIG = """
[rig]
name = "bench-display"
[display]
kind = "qt"
"""


def _stats(values_ns: list[int]) -> dict[str, float]:
    ms = np.asarray(values_ns, dtype=np.float64) / 1e6
    if not len(ms):
        return {"median_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def display_latency(frames: int = 300, rate_hz: float = 30.0, size: tuple[int, int] = (1280, 800),
                    timeout_s: float = 60.0) -> dict[str, Any]:
    """Run the display node on ``frames`` feedback changes at ``rate_hz``; latency statistics and counts."""
    from bcirig.gui.xvfb import Xvfb

    server = None
    env = dict(os.environ)
    if not env.get("DISPLAY"):
        server = Xvfb(size[0], size[1])
        env["DISPLAY"] = server.start()
    env.setdefault("QT_QPA_PLATFORM", "xcb")
    try:
        with tempfile.TemporaryDirectory(prefix="bcirig-bench-display-") as tmp:
            return _run(Path(tmp), frames, rate_hz, size, env, timeout_s) | {
                "xvfb_started": server is not None, "platform": env["QT_QPA_PLATFORM"], "size": list(size)}
    finally:
        if server is not None:
            server.stop()


def _run(run_dir: Path, frames: int, rate_hz: float, size: tuple[int, int], env: dict[str, str],
         timeout_s: float) -> dict[str, Any]:
    (run_dir / "p.toml").write_text(bench_protocol_text(64, 64, rate_hz))
    (run_dir / "rig.toml").write_text(RIG)
    eps = endpoints(run_dir, ("supervisor", "task", "display"), BusConfig())
    control = f"ipc://{run_dir / 'control'}"
    spec = NodeSpec(name="display", kind="display", run_dir=str(run_dir), endpoints=eps, control=control,
                    upstream=["task"], topics=["feedback"], drain_from=["task"], protocol_path=str(run_dir / "p.toml"),
                    rig_path=str(run_dir / "rig.toml"), options={"size": list(size)})
    ctx = zmq.Context()
    sup = Publisher(ctx, eps["supervisor"], "supervisor")
    task = Publisher(ctx, eps["task"], "task")
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(control)
    sub = Subscriber(ctx, [eps["display"]], {"presentation", "heartbeat", "log"})
    log = open(run_dir / "display.log", "wb")  # noqa: SIM115 - the child's, closed below
    proc = subprocess.Popen([sys.executable, "-m", "bcirig.nodes", str(spec.save())], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    records: list[Presentation] = []
    sent: dict[int, int] = {}
    opened = ""

    def beat(state: NodeState = NodeState.RUNNING) -> None:
        sup.publish(Heartbeat(node="supervisor", state=NodeState.RUNNING))
        task.publish(Heartbeat(node="task", state=state))

    def drain(wait_ms: int) -> None:
        nonlocal opened
        if sub.sock.poll(wait_ms):
            while (msg := sub.recv()) is not None:
                if isinstance(msg, Presentation):
                    records.append(msg)
                elif isinstance(msg, Log) and msg.level == LogLevel.INFO and not opened:
                    opened = msg.text

    try:
        deadline = time.monotonic() + timeout_s
        while not router.poll(50):  # start-up: heartbeats until the node reports READY
            beat(NodeState.STARTING)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the display node did not start: {(run_dir / 'display.log').read_text()[-500:]}")
        router.recv_multipart()
        sup.publish(Control(action=ControlAction.START))
        period = 1.0 / rate_hz
        t0 = time.monotonic() + 0.5  # let it open and draw its first grating before the clock starts
        next_beat = 0.0
        for i in range(frames):
            while (wait := t0 + i * period - time.monotonic()) > 0:
                drain(max(1, int(wait * 1000)))
                if time.monotonic() >= next_beat:
                    beat()
                    next_beat = time.monotonic() + 0.1
            fb = Feedback(frame=i, phase=Phase.CLOSED_LOOP, state=TrialState.ACTIVE, screen=Screen.GRATING,
                          angle_deg=15.0 * (i % 7))  # 7 bins: every frame a new angle
            task.publish(fb, stamp="task_out")
            sent[i] = fb.t_ns["task_out"]
        end = time.monotonic() + 2.0
        while time.monotonic() < end and len(records) + sum(r.skipped for r in records) < frames:
            drain(50)
            beat()
        sup.publish(Control(action=ControlAction.STOP))
        for _ in range(20):
            beat(NodeState.STOPPED)
            drain(50)
            if proc.poll() is not None:
                break
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        for s in (sup, task, sub):
            s.close()
        router.close()
        ctx.term()
    shown = [r for r in records if r.frame in sent]
    return {
        "frames": frames, "rate_hz": rate_hz, "presented": len(shown),
        "skipped": int(sum(r.skipped for r in shown)), "clock": sorted({r.clock.value for r in shown}),
        "opened": opened or (run_dir / "display.log").read_text().splitlines()[:1],
        "arrival_to_swap": _stats([r.t_presented_ns - r.t_update_ns for r in shown]),
        "publish_to_swap": _stats([r.t_presented_ns - sent[r.frame] for r in shown]),
        "refresh_ms": REFRESH_MS,
    }


def report_lines(r: dict[str, Any]) -> list[str]:
    """Rows for ``bcirig bench``'s table."""
    lines = [f"display: feedback -> buffer swap, {r['presented']} of {r['frames']} changes at {r['rate_hz']:g} Hz "
             f"presented ({r['skipped']} replaced), clock {','.join(r['clock'])}, "
             f"{'Xvfb started, ' if r['xvfb_started'] else ''}{r['platform']} {r['size'][0]}x{r['size'][1]}"]
    for key, label in (("arrival_to_swap", "arrival at the display node -> swap"),
                       ("publish_to_swap", "task publishes -> swap")):
        s = r[key]
        target = TARGET["p99_ms"]
        lines.append(f"{'  ' + label + ': median ms':<58}{s['median_ms']:>12.3f}")
        ok = s["p99_ms"] <= target
        lines.append(f"{'  ' + label + ': p99 ms':<58}{s['p99_ms']:>12.3f}  <= {target:.1f} (one 60 Hz refresh)"
                     f"{'  ok' if ok else '  MISSED'}")
        lines.append(f"{'  ' + label + ': p99 / refresh period':<58}{s['p99_ms'] / REFRESH_MS:>12.3f}")
    return lines


if __name__ == "__main__":
    res = display_latency(frames=int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    print("\n".join(report_lines(res)))
    print(json.dumps(res, indent=1))
