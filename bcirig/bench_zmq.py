"""Latency through the real node processes over ZeroMQ: paced frames -> pipeline node -> task node.

This process plays the supervisor (heartbeats, START/STOP, the control ROUTER) and the frame source (a
paced PUB of :class:`~bcirig.messages.Frame` stamped ``source`` just before sending, as the source node
does when a frame arrives from the microscope). It starts ``python -m bcirig.nodes`` for a pipeline node
and a task node, exactly as ``bcirig run`` does, and subscribes to both. Per frame it reports:

* ``readout published``: pipeline node's ``published`` stamp minus the frame's ``source`` stamp
  (frame arrival to readout published: transport in, processing, encoding);
* ``command sent``: task node's ``task_out`` stamp (when its feedback and any reward command leave)
  minus ``source``;
* ``readout received``: this process receiving the readout, minus ``source`` (one more hop).

All stamps are ``time.monotonic_ns()`` on one machine, so they are directly comparable.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bcirig.bus import Publisher, Subscriber
from bcirig.messages import Control, ControlAction, Feedback, Frame, Heartbeat, Log, NodeState, Readout
from bcirig.nodes.base import NodeSpec
from bcirig.processing.synthetic import make_movie
from bcirig.setup import Setup


def _stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, np.float64) / 1e6
    if a.size == 0:
        return {"median_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def run_case(h: int, w: int, n_rois: int, rate_hz: float, n_frames: int, run_dir: Path) -> dict[str, Any]:
    """One paced run through a pipeline node and a task node; latency statistics per path."""
    movie = make_movie(16, h, w, n_rois, seed=5)
    proto = run_dir / "protocol.toml"
    from bcirig.bench import bench_protocol_text  # bench imports this module lazily; no cycle at import

    proto.write_text(bench_protocol_text(h, w, rate_hz))
    setup = run_dir / "setup.npz"
    Setup(rois=movie.rois.to_arrays(), reference=movie.reference, truth_fields={}).save(setup)
    ep = {n: f"ipc://{run_dir / (n + '.pub')}" for n in ("supervisor", "source", "pipeline", "task")}
    control = f"ipc://{run_dir / 'control'}"
    specs = [
        NodeSpec(name="pipeline", kind="pipeline", run_dir=str(run_dir), endpoints=ep, control=control,
                 upstream=["source"], topics=["frame"], drain_from=["source"], protocol_path=str(proto),
                 rig_path="", setup_path=str(setup)),
        NodeSpec(name="task", kind="task", run_dir=str(run_dir), endpoints=ep, control=control,
                 upstream=["pipeline"], topics=["readout"], drain_from=["pipeline"], protocol_path=str(proto),
                 rig_path="", setup_path=str(setup)),
    ]
    ctx = zmq.Context()
    sup = Publisher(ctx, ep["supervisor"], "supervisor")
    src = Publisher(ctx, ep["source"], "source")
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(control)
    sub = Subscriber(ctx, [ep["pipeline"], ep["task"]], ["readout", "feedback", "heartbeat", "log"])
    procs = []
    for spec in specs:
        log = open(run_dir / f"{spec.name}.log", "w")  # noqa: SIM115 - closed with the process below
        procs.append((subprocess.Popen([sys.executable, "-m", "bcirig.nodes", str(spec.save())],
                                       stdout=log, stderr=subprocess.STDOUT), log))
    readout_pub: dict[int, int] = {}
    parts: list[tuple[int, int, int]] = []  # per readout: transport in, processing, encode + send
    readout_recv: dict[int, int] = {}
    command: dict[int, int] = {}
    source_t: dict[int, int] = {}
    errors: list[str] = []
    try:
        _handshake(sup, src, router, sub, errors)
        period = int(1e9 / rate_hz)
        start = time.monotonic_ns() + 50_000_000
        for i in range(n_frames):
            due = start + i * period
            _drain_until(sub, due, readout_pub, readout_recv, command, errors, parts)
            frame = Frame(frame=i, data=movie.frames[i % len(movie.frames)])
            src.publish(frame, stamp="source")
            source_t[i] = frame.t_ns["source"]
        _drain_until(sub, time.monotonic_ns() + 1_000_000_000, readout_pub, readout_recv, command, errors,
                     parts, stop_when=lambda: len(command) >= n_frames)
        src.publish(Heartbeat(node="source", state=NodeState.STOPPED))
        sup.publish(Control(action=ControlAction.STOP))
        for p, _ in procs:
            p.wait(timeout=15)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
        for s in (sup, src, sub):
            s.close()
        router.close()
        ctx.term()

    def deltas(stamps: dict[int, int]) -> list[int]:
        return [stamps[i] - source_t[i] for i in stamps if i in source_t]

    return {
        "frames": n_frames,
        "readouts": len(readout_pub),
        "commands": len(command),
        "readout_published": _stats(deltas(readout_pub)),
        "command_sent": _stats(deltas(command)),
        "readout_received": _stats(deltas(readout_recv)),
        "breakdown_median_ms": dict(zip(
            ("transport_in", "processing", "encode_send"),
            (float(v) for v in (np.median(np.array(parts), axis=0) / 1e6 if parts else [np.nan] * 3)),
            strict=True,
        )),
        "errors": errors[:5],
    }


def _handshake(sup: Publisher, src: Publisher, router: zmq.Socket, sub: Subscriber, errors: list[str]) -> None:
    """Heartbeat as supervisor and source until both nodes are ready and heard, then START."""
    ready: set[bytes] = set()
    heard: set[str] = set()
    deadline = time.monotonic() + 60
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(sub.sock, zmq.POLLIN)
    while not (len(ready) == 2 and {"pipeline", "task"} <= heard):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nodes did not start (ready: {ready}, heard: {heard}, errors: {errors})")
        sup.publish(Heartbeat(node="supervisor", state=NodeState.RUNNING))
        src.publish(Heartbeat(node="source", state=NodeState.RUNNING))
        events = dict(poller.poll(50))
        if router in events:
            ident, *_ = router.recv_multipart()
            ready.add(ident)
        while (msg := sub.recv()) is not None:
            if isinstance(msg, Heartbeat):
                heard.add(msg.src)
            elif isinstance(msg, Log) and msg.level == "error":
                raise RuntimeError(f"node {msg.node} failed: {msg.text}")
    sup.publish(Control(action=ControlAction.START))


def _drain_until(
    sub: Subscriber, until_ns: int, readout_pub: dict[int, int], readout_recv: dict[int, int],
    command: dict[int, int], errors: list[str], parts: list[tuple[int, int, int]], stop_when: Any = None,
) -> None:
    """Receive and time-stamp messages until ``until_ns`` (blocking on poll, never spinning)."""
    while True:
        left = until_ns - time.monotonic_ns()
        if left <= 0 or (stop_when is not None and stop_when()):
            return
        if not sub.sock.poll(max(1, left // 1_000_000)):
            continue
        while (msg := sub.recv()) is not None:
            now = time.monotonic_ns()
            if isinstance(msg, Readout):
                readout_recv[msg.frame] = now
                t = msg.t_ns
                readout_pub[msg.frame] = t.get("published", now)
                if {"source", "arrive", "decoded", "published"} <= t.keys():
                    parts.append((t["arrive"] - t["source"], t["decoded"] - t["arrive"], t["published"] - t["decoded"]))
                if not msg.valid:
                    errors.append(msg.error)
            elif isinstance(msg, Feedback) and "task_out" in msg.t_ns:
                command[msg.frame] = msg.t_ns["task_out"]
            elif isinstance(msg, Log) and msg.level == "error":
                errors.append(f"{msg.node}: {msg.text}")


def zmq_latency(quick: bool = False) -> dict[str, Any]:
    """Both standard cases through the node processes; results keyed by case name."""
    out: dict[str, Any] = {}
    cases = [("512x512@30Hz 10 ROIs", 512, 512, 10, 30.0, 90 if quick else 450),
             ("128x128@1kHz 10 ROIs", 128, 128, 10, 1000.0, 1000 if quick else 5000)]
    for name, h, w, n, rate, frames in cases:
        with tempfile.TemporaryDirectory(prefix="bcirig-bench-") as tmp:
            try:
                out[name] = run_case(h, w, n, rate, frames, Path(tmp))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                out[name] = {"error": str(exc)}
    return out
