"""Frames from a sender to a decision, through the real rig: the ways in, and the whole chain.

Two measurements, each beside CLOOSE's published figure (one 512 x 796 uint16 frame over TCP: median
3.0 ms between two processes on one PC, 7.05 ms between two PCs):

* **transfer per way in**: a 512 x 796 uint16 frame from a sender process to the rig's frame source
  (``read()`` returning it) over loopback, for the bcirig protocol over ZeroMQ and over plain TCP, and
  for CLOOSE's headerless stream; with, as the same-run baseline, the bare socket: the same bytes
  written by a sender process and read by ``recv_into`` with nothing else done.
* **the whole chain**: ``bcirig send`` streams a movie at the imaging rate to a full session run by the
  real supervisor (pipeline, task, valve and recorder processes over ZeroMQ, HDF5 recording), and the
  session file gives, per frame, sent -> arrived, sent -> readout published and sent -> the task's
  feedback sent. The sender stamps each frame with ``time.monotonic_ns()`` just before sending, on the
  rig's own clock, so the differences are directly comparable.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.processing.synthetic import make_movie
from bcirig.recording.latency import stats_ms

CLOOSE_MS = {"one_pc": 3.0, "two_pcs": 7.05}
SHAPE = (512, 796)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------- ways in
_SENDER = r"""
import socket, sys, time, numpy as np
kind, port, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
img = (np.arange(512 * 796, dtype=np.uint32) % 65521).astype(np.uint16).reshape(512, 796)
stamps = []
if kind == "zmq" or kind == "tcp":
    from bcirig.acquisition.sender import FrameSender
    to = f"tcp://127.0.0.1:{port}" if kind == "zmq" else f"127.0.0.1:{port}"
    for attempt in range(200):
        try:
            tx = FrameSender(to, kind)
            break
        except OSError:
            time.sleep(0.05)
    send = lambda i, t: tx.send(img, i, t, 0)
else:  # cloose and the bare-socket baseline: headerless bytes, the receiver listens
    for attempt in range(200):
        try:
            sock = socket.create_connection(("127.0.0.1", port)); break
        except OSError:
            time.sleep(0.05)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = img.T.astype(">u2").tobytes() if kind == "cloose" else img.tobytes()
    send = lambda i, t: sock.sendall(payload)
t0 = time.monotonic()
for i in range(n):
    while time.monotonic() < t0 + i / rate:
        time.sleep(0.0002)
    t = time.monotonic_ns()
    send(i, t)
    stamps.append(t)
print(" ".join(map(str, stamps)))
time.sleep(0.5)
"""


def _bare_socket_receiver(port: int, n: int, arrivals: list[int]) -> None:
    nbytes = SHAPE[0] * SHAPE[1] * 2
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(1)
        conn, _ = srv.accept()
        buf = bytearray(nbytes)
        view = memoryview(buf)
        with conn:
            for _ in range(n):
                got = 0
                while got < nbytes:
                    k = conn.recv_into(view[got:], nbytes - got)
                    if k == 0:
                        return
                    got += k
                arrivals.append(time.monotonic_ns())
                np.frombuffer(buf, np.uint16).copy()  # the frame a receiver would keep


def transfer(kind: str, n: int = 200, rate_hz: float = 100.0) -> dict[str, Any]:
    """Sender process -> frame in the receiver's hands, ms per frame, for one way in."""
    from bcirig.config import (
        ByteOrder,
        ClooseRole,
        ClooseSourceConfig,
        ElementOrder,
        Framing,
        Imaging,
        NetworkSourceConfig,
        PixelType,
    )

    port = _free_port()
    arrivals: list[int] = []
    source: Any = None
    thread = None
    expected = np.asarray((np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint32) % 65521).astype(np.uint16)
                          ).reshape(SHAPE)
    if kind in ("zmq", "tcp"):
        from bcirig.acquisition.network import NetworkSource

        source = NetworkSource(NetworkSourceConfig(framing=Framing(kind), port=port))
    elif kind == "cloose":
        from bcirig.acquisition.cloose import ClooseSource

        source = ClooseSource(ClooseSourceConfig(role=ClooseRole.SERVER, port=port,
                                                 element_order=ElementOrder.COLUMN_MAJOR, byte_order=ByteOrder.BIG),
                              Imaging(height=SHAPE[0], width=SHAPE[1], dtype=PixelType.UINT16))
    else:
        thread = threading.Thread(target=_bare_socket_receiver, args=(port, n, arrivals), daemon=True)
        thread.start()
    if source is not None:
        source.open()
    proc = subprocess.Popen([sys.executable, "-c", _SENDER, kind, str(port), str(n), str(rate_hz)],
                            stdout=subprocess.PIPE, text=True)
    identical = True
    deadline = time.monotonic() + 30 + n / rate_hz
    try:
        if source is not None:
            import zmq

            poller = zmq.Poller()
            while len(arrivals) < n and time.monotonic() < deadline:
                for fd in source.poll_fds():
                    poller.register(fd, zmq.POLLIN)
                poller.poll(20)
                for fd in source.poll_fds():
                    poller.unregister(fd)
                for raw in source.read():
                    arrivals.append(raw.t_arrive_ns)
                    identical &= bool(np.array_equal(raw.data, expected))
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if source is not None:
            source.close()
        proc.kill()
    if thread is not None:
        thread.join(timeout=5)
    sent = np.array([int(s) for s in out.split()], np.int64)
    k = min(len(sent), len(arrivals))
    ms = (np.asarray(arrivals[:k], np.int64) - sent[:k]) / 1e6
    return {"frames": n, "received": len(arrivals), "identical": identical, **stats_ms(ms[5:])}  # 5: warm-up


def transfers(quick: bool = False) -> dict[str, Any]:
    """Every way in and the bare-socket baseline, with each one's ratio to the baseline."""
    n = 100 if quick else 300
    out = {kind: transfer(kind, n) for kind in ("socket", "zmq", "tcp", "cloose")}
    base = out["socket"]["median_ms"]
    for r in out.values():
        r["ratio_to_socket"] = r["median_ms"] / base if base > 0 else float("nan")
    return out


# ----------------------------------------------------------------------------------- whole chain
def _protocol_text(h: int, w: int, rate_hz: float, frames: int) -> str:
    from bcirig.bench.common import bench_protocol_text

    # a baseline longer than the run: every frame goes through pipeline and task, none ends the session
    return bench_protocol_text(h, w, rate_hz) + f"""
[baseline]
frames = {frames + 1000}
[trials]
length_frames = 100
grey_frames = 5
[recording]
frames = true
"""


RIG = """
[rig]
name = "bench"
[source]
kind = "network"
[source.network]
framing = "{framing}"
port = {port}
[valve]
kind = "simulated"
[sound]
kind = "buffer"
"""


def chain(h: int, w: int, n_rois: int, rate_hz: float, n_frames: int, run_dir: Path,
          framing: str = "zmq", console: bool = False) -> dict[str, Any]:
    """``bcirig send`` -> a full realtime session (with the operator's console if asked); per-frame
    latencies from the session file."""
    from bcirig.recording import SessionFile
    from bcirig.setup import Setup
    from bcirig.supervisor import Supervisor

    movie = make_movie(16, h, w, n_rois, seed=5)
    proto, rig, npy = run_dir / "bench.toml", run_dir / "rig.toml", run_dir / "movie.npy"
    proto.write_text(_protocol_text(h, w, rate_hz, n_frames))
    port = _free_port()
    rig.write_text(RIG.format(framing=framing, port=port))
    np.save(npy, movie.frames[:, 0])
    setup = Setup(rois=movie.rois.to_arrays(), reference=movie.reference, truth_fields={})
    sup = Supervisor(proto, rig, data_dir=run_dir / "data", subject="bench", mode="realtime", setup=setup,
                     console=console)
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(r=sup.run()), daemon=True)
    runner.start()
    errors: list[str] = []
    if not sup.started.wait(120):
        errors.append("the session did not start within 120 s")
    to = f"tcp://127.0.0.1:{port}" if framing == "zmq" else f"127.0.0.1:{port}"
    sent = subprocess.run([sys.executable, "-m", "bcirig.cli", "send", str(npy), "--rate", str(rate_hz), "--to", to,
                           "--framing", framing, "--count", str(n_frames), "--loop"],
                          capture_output=True, text=True, timeout=120 + n_frames / rate_hz)
    if sent.returncode != 0:
        errors.append(f"bcirig send failed: {sent.stderr.strip()[-300:]}")
    deadline = time.monotonic() + 10
    while sup.frames_decided < n_frames and time.monotonic() < deadline and runner.is_alive():
        time.sleep(0.05)
    sup.request_stop("benchmark done")
    runner.join(timeout=60)
    res = result.get("r")
    if res is None:
        return {"error": "; ".join(errors) or "the session did not end"}
    with SessionFile(res.path) as sf:
        acq, ro, fb = sf.table("acquisition"), sf.table("readout"), sf.table("feedback")
        from bcirig.recording.layout import FEEDBACK_STAMPS, READOUT_STAMPS

        t_acq = acq["t_acq_ns"]
        n = min(len(t_acq), len(ro["frame"]), len(fb["frame"]))
        published = ro["t_ns"][:n, READOUT_STAMPS.index("published")]
        task_out = fb["t_ns"][:n, FEEDBACK_STAMPS.index("task_out")]
        out = {
            # decisions per frame: the stop's safe-state feedback row repeats the last frame's number
            "frames": n_frames, "readouts": len(ro["frame"]), "decided": len(np.unique(fb["frame"])),
            "dropped_frames": int(acq["dropped"].sum()), "malformed_frames": int(acq["malformed"].sum()),
            "sender": sent.stdout.strip().splitlines()[-1] if sent.stdout.strip() else "",
            "transfer": stats_ms((acq["t_arrive_ns"][:n] - t_acq[:n]) / 1e6),
            "sent_to_readout": stats_ms((published - t_acq[:n]) / 1e6),
            "sent_to_feedback": stats_ms((task_out - t_acq[:n]) / 1e6),
            "session_error": res.error if res.error != "stopped by request" else "",
            "errors": errors,
        }
    return out


def chains(quick: bool = False) -> dict[str, Any]:
    """The two standard cases of the live-microscope issue."""
    cases = [("512x796@30Hz 10 ROIs", 512, 796, 10, 30.0, 90 if quick else 450),
             ("128x128@1kHz 10 ROIs", 128, 128, 10, 1000.0, 1000 if quick else 5000)]
    out: dict[str, Any] = {}
    for name, h, w, n, rate, frames in cases:
        with tempfile.TemporaryDirectory(prefix="bcirig-bench-") as tmp:
            out[name] = chain(h, w, n, rate, frames, Path(tmp))
    return out
