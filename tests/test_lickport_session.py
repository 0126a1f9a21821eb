"""The lickport node as a real process on real ZeroMQ, its stage the Zaber twin on a pty inside it.

The test stands in for the supervisor (READY, START, SAFE, STOP, heartbeats) and for the task: it
publishes a stream of Feedback messages at the imaging rate, as the task would once it drives the port
(``feedback.kind = "lickport"``), and reads the node's LickportPosition reports. The node drives the
twin through the real serial driver (``sim-lickport.toml``: limits 0..8 mm, 10 mm/s top speed).

What a scientist checks on the record: the port never leaves its travel; it never moves faster than
its top speed; it keeps up with the command (between two frames it moves at full speed toward where it
was sent, so on a frame that comes on time it is within one frame's travel of the command); it arrives
where it is sent; on SAFE it goes back to its start and ignores feedback. Waiting is on messages, never
on sleeps: the frame pacing is a poll timeout, as in a realtime session.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from bcirig.bus import Publisher, Subscriber
from bcirig.config import load_rig
from bcirig.messages import (
    Control,
    ControlAction,
    Feedback,
    Heartbeat,
    LickportPosition,
    Log,
    NodeState,
    Phase,
    Topic,
)
from bcirig.nodes import NodeSpec
from bcirig.recording import SessionFile
from bcirig.replay import replay
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT

RIG = ROOT / "hardware" / "rigs" / "sim-lickport.toml"
CFG = load_rig(RIG).lickport
STEP_MM = CFG.um_per_microstep / 1000  # one microstep: the resolution of every position report
V_MAX = CFG.max_speed_mm_s  # the top speed written into the stage
FRAME_S = 1 / 30


class Bench:
    """A stand-in supervisor and task around one lickport node process."""

    def __init__(self, log_dir: Path, kind: str = "lickport") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lp-", dir="/tmp"))  # ipc paths must stay short
        eps = {n: f"ipc://{self.dir / n}.pub" for n in ("supervisor", "task", "lickport")}
        control = f"ipc://{self.dir / 'control'}"
        self.ctx = zmq.Context()
        self.sup = Publisher(self.ctx, eps["supervisor"], "supervisor")
        self.task = Publisher(self.ctx, eps["task"], "task")
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(control)
        self.sub = Subscriber(self.ctx, [eps["lickport"]], [Topic.LICKPORT, Topic.HEARTBEAT, Topic.LOG])
        spec = NodeSpec(name="lickport", kind=kind, run_dir=str(self.dir), endpoints=eps, control=control,
                        upstream=["task"], topics=["feedback"], drain_from=["task"], protocol_path="",
                        rig_path=str(RIG))
        self.log_path = log_dir / "lickport.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bcirig.nodes", str(spec.save())], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT)
        self.rows: list[LickportPosition] = []
        self.errors: list[str] = []
        self.final: dict[str, int] | None = None
        self.final_state: NodeState | None = None
        self.heard = False  # a heartbeat from the node: this side's subscription is live
        self.frame = -1
        self.sent: dict[int, float] = {}  # frame -> lickport_mm sent
        self.task_state = NodeState.RUNNING
        self.next_beat = 0.0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.dir, ignore_errors=True)

    def pump(self, until: Callable[[], bool], what: str, *, timeout_s: float = 20.0,
             feedback: Callable[[int], Feedback] | None = None) -> None:
        """Heartbeats, and with ``feedback`` one frame every FRAME_S, until ``until()``; fails after timeout_s."""
        deadline = time.monotonic() + timeout_s
        next_frame = time.monotonic()
        while not until():
            now = time.monotonic()
            assert now < deadline, f"{what}: not within {timeout_s} s; node log:\n{self.log_path.read_text()[-3000:]}"
            assert self.proc.poll() is None or self.final is not None, (
                f"the node exited ({self.proc.returncode}) during {what}:\n{self.log_path.read_text()[-3000:]}")
            if now >= self.next_beat:
                self.sup.publish(Heartbeat(node="supervisor", state=NodeState.RUNNING))
                self.task.publish(Heartbeat(node="task", state=self.task_state))
                self.next_beat = now + 0.05
            if feedback is not None and now >= next_frame:
                self.frame += 1
                fb = feedback(self.frame)
                fb.frame = self.frame
                self.sent[self.frame] = fb.lickport_mm
                self.task.publish(fb, stamp="task_out")
                next_frame += FRAME_S
            wake = min(self.next_beat, next_frame if feedback is not None else self.next_beat)
            if self.sub.sock.poll(max(1, math.ceil((wake - time.monotonic()) * 1000))):
                while (msg := self.sub.recv()) is not None:
                    if isinstance(msg, LickportPosition):
                        self.rows.append(msg)
                    elif isinstance(msg, Log) and msg.level == "error":
                        self.errors.append(msg.text)
                    elif isinstance(msg, Heartbeat):
                        self.heard = True
                        if msg.state in (NodeState.STOPPED, NodeState.FAILED):
                            self.final, self.final_state = dict(msg.counters), msg.state

    def start(self) -> None:
        """Heartbeats until the node says READY (it homes the stage first) and this side hears it, then START."""
        ready: list[bytes] = []

        def is_ready() -> bool:
            if self.router.poll(0):
                ready.append(self.router.recv_multipart()[0])
            return bool(ready) and self.heard  # ZeroMQ drops what is published before a subscription is live

        self.pump(is_ready, "the node's READY", timeout_s=30.0)
        assert ready == [b"lickport"]
        self.sup.publish(Control(action=ControlAction.START))

    def stop(self) -> None:
        """STOP, the task's final heartbeat; the node drains, retracts, and exits 0."""
        self.sup.publish(Control(action=ControlAction.STOP))
        self.task_state = NodeState.STOPPED
        self.pump(lambda: self.final is not None, "the node's final heartbeat")
        assert self.proc.wait(timeout=15) == 0, self.log_path.read_text()[-3000:]

    def driven(self) -> list[LickportPosition]:
        return [r for r in self.rows if not r.retracting]

    def arrived(self, mm: float) -> Callable[[], bool]:
        return lambda: bool(self.rows) and not self.rows[-1].moving and abs(self.rows[-1].measured_mm - mm) < STEP_MM


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    try:
        yield b
    finally:
        b.close()


def frame(mm: float, speed: float, phase: Phase = Phase.CLOSED_LOOP) -> Feedback:
    return Feedback(phase=phase, lickport_mm=mm, lickport_speed_mm_s=speed)


def target(row: LickportPosition) -> float:
    """Where the node sends the port for a row: the command inside the travel; NaN and retraction: the start."""
    if row.retracting or not math.isfinite(row.commanded_mm):
        return 0.0
    return min(max(row.commanded_mm, 0.0), CFG.max_mm - CFG.min_mm)


def check_motion(rows: list[LickportPosition]) -> int:
    """The physical checks on each pair of consecutive frames; returns how many pairs were checked."""
    checked = 0
    for prev, row in itertools.pairwise(rows):
        if not (row.frame == prev.frame + 1 or (row.retracting and prev.retracting)):
            continue  # frames in between moved the stage without a report: no bound from these two alone
        m0, m = prev.measured_mm, row.measured_mm
        c0, c = target(prev), target(row)
        # never faster than the top speed: its position at the earlier report was taken after the earlier
        # request was written, the later one before the later reply was read
        assert abs(m - m0) <= V_MAX * (row.t_ns["device_ack"] - prev.t_ns["asked"]) * 1e-9 + STEP_MM, (prev, row)
        # never beyond where it was sent: between where it was and the targets it was given
        assert min(m0, c0, c) - STEP_MM <= m <= max(m0, c0, c) + STEP_MM, (prev, row)
        # keeps up: from the earlier reply on it heads for c0 (then c) at full speed, at least until the later
        # request; so it covered that time at top speed or reached the nearer of its targets
        if (c0 - m0) * (c - m0) > 0:
            toward = math.copysign(1.0, c - m0)
            covered = V_MAX * max(0.0, (row.t_ns["asked"] - prev.t_ns["device_ack"]) * 1e-9)
            nearer = min(abs(c0 - m0), abs(c - m0))
            assert toward * (m - m0) >= min(nearer, covered) * (1 - 1e-3) - STEP_MM, (prev, row)
        checked += 1
    return checked


def test_the_port_follows_the_task_within_its_travel_and_speed_and_retracts_on_safe(bench: Bench) -> None:
    bench.start()
    # baseline: no lickport feedback (NaN): the port stays at its start
    bench.pump(lambda: bench.frame >= 9, "baseline", feedback=lambda i: frame(math.nan, math.nan, Phase.BASELINE))
    # the neuron drives it in at 3 mm/s for 2.5 s; then held at 7 mm until it is there
    ramp_start = bench.frame + 1

    def ramp(i: int) -> Feedback:
        return frame(min(7.0, 3.0 * (i - ramp_start + 1) * FRAME_S), 3.0 if i - ramp_start < 70 else 0.0)

    bench.pump(lambda: bench.frame >= ramp_start + 75 and bench.arrived(7.0)(), "the ramp to 7 mm", feedback=ramp)
    # a command beyond the travel (the stage's limit is 8 mm), then one behind the start
    bench.pump(bench.arrived(8.0), "the clamp at 8 mm", feedback=lambda i: frame(9.5, 3.0))
    bench.pump(bench.arrived(0.0), "the clamp at the start", feedback=lambda i: frame(-1.0, -3.0))
    # a step the stage needs 0.5 s for, held until it is there
    bench.pump(bench.arrived(5.0), "the step to 5 mm", feedback=lambda i: frame(5.0, 0.0))
    last_before_safe = bench.frame

    # SAFE: back to the start at top speed; feedback that follows is ignored
    bench.sup.publish(Control(action=ControlAction.SAFE, reason="test"))
    bench.pump(lambda: any(r.retracting for r in bench.rows) and bench.arrived(0.0)(), "the retraction",
               feedback=lambda i: frame(6.0, 3.0))
    bench.stop()
    assert bench.errors == [] and bench.final is not None
    driven = bench.driven()
    after = [r for r in bench.rows if r.retracting]

    # every frame sent is accounted for: reported, or counted as coalesced, unmeasured, abandoned at SAFE or
    # come after it; and none after SAFE moved the port
    c = bench.final
    frames = [r.frame for r in driven]
    assert frames == sorted(set(frames)) and frames[-1] <= last_before_safe
    assert c["positions"] == len(bench.rows)
    assert (len(driven) + c["frames_coalesced"] + c["frames_unmeasured"] + c["frames_abandoned"]
            + c["frames_after_safe"]) == bench.frame + 1  # frames 0..bench.frame
    # each report carries the command of its own frame
    for r in driven:
        np.testing.assert_equal(r.commanded_mm, bench.sent[r.frame])
    # the port never left its travel, and never went past 8 mm though it was sent to 9.5
    measured = np.array([r.measured_mm for r in bench.rows])
    assert measured.min() >= -STEP_MM and measured.max() <= CFG.max_mm - CFG.min_mm + STEP_MM
    assert measured.max() >= CFG.max_mm - STEP_MM and c["clamped_frames"] > 0
    # baseline: at its start throughout
    assert all(abs(r.measured_mm) < STEP_MM for r in driven if not math.isfinite(r.commanded_mm))
    # the physics of every consecutive pair: speed, no overshoot, keeping up (within one frame's travel of
    # the command on a frame that came on time: 3 mm/s / 30 Hz = 0.1 mm on the ramp)
    assert check_motion(driven) >= 10
    on_ramp = [r for r in driven if ramp_start <= r.frame < ramp_start + 70]
    assert on_ramp and all(r.measured_mm <= r.commanded_mm + STEP_MM for r in on_ramp)
    # after SAFE: the retraction, descending to the start, which is where the session ends
    assert after and bench.rows[-len(after):] == after
    assert all(b.measured_mm <= a.measured_mm + STEP_MM for a, b in itertools.pairwise(after))
    assert check_motion(after) >= 1
    assert abs(after[-1].measured_mm) < STEP_MM and not after[-1].moving


def test_the_tasks_own_safe_state_retracts_the_port(bench: Bench) -> None:
    bench.start()
    bench.pump(bench.arrived(4.0), "the step to 4 mm", feedback=lambda i: frame(4.0, 0.0))
    n = len(bench.rows)
    # frames stopped: the task publishes its safe-state feedback once (lickport_mm says nothing)
    bench.task.publish(Feedback(frame=bench.frame + 1, phase=Phase.SAFE), stamp="task_out")
    bench.pump(lambda: len(bench.rows) > n and bench.rows[-1].retracting and bench.arrived(0.0)(), "the retraction")
    bench.stop()
    assert bench.rows[-1].retracting and abs(bench.rows[-1].measured_mm) < STEP_MM
    assert max(r.measured_mm for r in bench.rows[n:]) <= 4.0 + STEP_MM


def test_a_node_that_fails_leaves_the_port_at_its_start(tmp_path: Path) -> None:
    bench = Bench(tmp_path, kind="tests.lickport_faults:LickportNodeThatFails")
    try:
        bench.start()
        bench.pump(lambda: bench.final is not None, "the node's failure", feedback=lambda i: frame(5.0, 0.0))
        assert bench.proc.wait(timeout=15) == 1 and bench.final_state is NodeState.FAILED
        assert any("injected failure" in e for e in bench.errors)
        # it got past 2 mm toward the mouse, then went back: its last report, before the FAILED heartbeat
        assert max(r.measured_mm for r in bench.rows) >= 2.0
        last = bench.rows[-1]
        assert last.retracting and abs(last.measured_mm) < STEP_MM and not last.moving
    finally:
        bench.close()


@pytest.mark.slow
def test_a_lockstep_session_on_the_lickport_rig_records_the_port_every_frame(tmp_path: Path) -> None:
    """The supervisor starts the lickport node for sim-lickport.toml; the session file holds its table.

    The protocol is the grating e2e one: until the task drives the port (feedback.kind = "lickport", the
    lead's part of #15) its feedback says nothing about it (NaN), so the port stays at its start on every
    frame and goes back there at the end; the decisions replay identically, the lickport aside.
    """
    result = Supervisor(ROOT / "tests" / "configs" / "e2e.toml", RIG, data_dir=tmp_path, mode="lockstep").run()
    assert result.ok, result.error
    with SessionFile(result.path) as sf:
        fb, lp = sf.table("feedback"), sf.lickport()
        nodes = {n.decode(): json.loads(c) for n, c in zip(sf.table("nodes")["node"], sf.table("nodes")["counters"],
                                                            strict=True)}
    c = nodes["lickport"]
    driven = ~lp["retracting"]
    # every feedback message the recorder got, the lickport node got too: reported or counted
    assert c["positions"] == len(lp["frame"]) and driven.sum() >= 1
    assert (driven.sum() + c["frames_coalesced"] + c["frames_unmeasured"] + c["frames_abandoned"]
            + c["frames_after_safe"]) == len(fb["frame"])
    assert set(lp["frame"][driven].tolist()) <= set(fb["frame"].tolist())
    assert (np.diff(lp["frame"][driven]) > 0).all()
    # a grating protocol: no lickport feedback, the port at its start throughout, and there at the end
    assert np.isnan(fb["lickport_mm"]).all() and np.isnan(fb["lickport_speed_mm_s"]).all()
    assert np.isnan(lp["commanded_mm"][driven]).all()
    assert np.abs(lp["measured_mm"]).max() < STEP_MM and c["moves"] == 0
    assert lp["retracting"][-1] and not lp["moving"][-1]
    assert (np.diff(lp["t_ns"]) >= 0).all()
    rep = replay(result.path)
    assert rep.identical, rep.text()


@pytest.mark.slow
def test_a_lockstep_session_where_the_neuron_drives_the_port(tmp_path: Path) -> None:
    """feedback.kind = "lickport": the task moves the port with the readout, the node drives the stage, the
    file records both, and the simulated mouse's licks reach the spout only when the port is in reach."""
    text = (ROOT / "tests" / "configs" / "e2e.toml").read_text()
    text = text.replace("[outcomes.hit]\n", '[outcomes.hit]\nwhen = "lickport_reached"\n')
    text += '\n[feedback]\nkind = "lickport"\nlickport_travel_mm = 7.0\nlickport_speed_mm_s = 8.0\n'
    text += "\n[simulation]\nlick_rate_hz = 3.0\n"
    proto = tmp_path / "lickport.toml"
    proto.write_text(text)
    result = Supervisor(proto, RIG, data_dir=tmp_path, mode="lockstep").run()
    assert result.ok, result.error
    with SessionFile(result.path) as sf:
        fb, lp, truth = sf.table("feedback"), sf.lickport(), sf.table("truth")
        contacts = [e["frame"] for e in sf.events() if e["name"] == "lick_contact"]
    driven = ~lp["retracting"]
    # each report carries its frame's command, as the task recorded it
    by_frame = dict(zip(fb["frame"].tolist(), fb["lickport_mm"].tolist(), strict=True))
    np.testing.assert_array_equal(lp["commanded_mm"][driven], [by_frame[f] for f in lp["frame"][driven]])
    # the neuron moved the port; the stage went where it was sent and never beyond its travel
    assert np.nanmax(fb["lickport_mm"]) > 1.0
    assert lp["measured_mm"].max() > 0.5 and lp["measured_mm"].max() <= np.nanmax(fb["lickport_mm"]) + STEP_MM
    assert lp["measured_mm"].min() >= -STEP_MM
    assert lp["retracting"][-1] and abs(lp["measured_mm"][-1]) < STEP_MM
    # the mouse licked all along, but a contact only on a frame after which the port was all the way in
    # (lockstep: frame f is rendered having sensed the feedback of frame f - 1)
    assert truth["licks"].sum() > len(contacts)
    in_reach = {f + 1 for f, mm in by_frame.items() if mm >= 7.0}
    assert set(contacts) <= in_reach
    rep = replay(result.path)
    assert rep.identical, rep.text()
