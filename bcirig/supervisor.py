"""The supervisor: validates the configuration, starts one process per node, watches them, stops safely.

Control plane: a ROUTER socket collects each node's READY; a PUB socket broadcasts START, SAFE and STOP
(and the supervisor's own heartbeat, which nodes wait for before they report ready). If a node dies or
falls silent, the supervisor broadcasts SAFE (the task stops rewarding and greys the screen, the valve
refuses commands), then STOP; the recorder drains and closes the file; one line names the node and its
error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from bcirig.acquisition import FrameSource
from bcirig.acquisition.assembler import FrameAssembler
from bcirig.acquisition.factory import make_source
from bcirig.bus import Publisher, Subscriber, endpoints
from bcirig.config import (
    DisplayKind,
    LaterDays,
    LickportKind,
    RoiMethod,
    SoundKind,
    Transport,
    load_protocol,
    load_rig,
)
from bcirig.control_plane import READY, REQUEST, STOP, Answer, OperatorDesk, write_endpoints
from bcirig.messages import (
    Control,
    ControlAction,
    Event,
    EventKind,
    Heartbeat,
    Log,
    LogLevel,
    NodeState,
    OutcomeCounts,
    Topic,
    TrialEnd,
)
from bcirig.modes import RunMode
from bcirig.nodes import NodeSpec
from bcirig.preflight import check_session
from bcirig.recording import SessionFile
from bcirig.setup import PreviousSetup, RoiChoice, Setup, SetupError, SetupPhase, truth_setup
from bcirig.subjects import Subject
from bcirig.summary import session_summary

NODES = ("pipeline", "task", "valve", "recorder")
# upstream, topics, drain_from. The frame source runs inside the pipeline node (ARCHITECTURE.md, "Frames in").
WIRING: dict[str, tuple[list[str], list[str], list[str]]] = {
    "pipeline": (["task"], ["feedback", "event"], []),  # feedback: a closed-loop source senses it
    "task": (["pipeline"], ["readout"], ["pipeline"]),
    "valve": (["task", "pipeline"], ["command", "event"], ["task", "pipeline"]),  # pipeline: simulated licks
    "recorder": (["pipeline", "task", "valve"],
                 ["frame", "readout", "feedback", "command", "ack", "event"],
                 ["pipeline", "task", "valve"]),
    "display": (["task"], ["feedback"], ["task"]),
    "lickport": (["task"], ["feedback"], ["task"]),  # rig lickport.kind != "none": the motorised lickport
    "sound": (["task"], ["feedback"], ["task"]),
    # console: upstream is every node (their heartbeats); its data arrives on its own receiver thread
    "console": (["pipeline", "task"], ["readout", "feedback", "event", "frame", "command", "ack"],
                ["pipeline", "task"]),
}
# Lower CPU priority for nodes off the frame -> decision path: on a 2-core rig a recorder's flush (a
# second of frames at once) or a console redraw must wait for the pipeline and the task, not they for it.
# Their queues are unbounded (recorder) or bounded for display only (console), so they only lag.
NICE = {"recorder": 5, "console": 10}
# Nodes that only show the session to the operator: one that exits, crashes or hangs is logged and left
# out; the session goes on, since nothing in the loop or the recording depends on it.
DISPLAY_ONLY = frozenset({"console"})
STARTUP_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 30.0  # set-up phase: this long without a usable frame is an error
SILENCE_TIMEOUT_S = 5.0
EXIT_TIMEOUT_S = 15.0


class SessionError(RuntimeError):
    """The session could not start or did not end cleanly; the message names the node and the cause."""


class SessionForced(SessionError):
    """A second stop signal: the node processes were killed."""


@dataclass
class SessionResult:
    """How a session ended."""

    path: Path
    ok: bool
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # completed, stopped or failed
    reason: str = ""


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs one session as a set of node processes."""

    def __init__(
        self,
        protocol_path: str | Path,
        rig_path: str | Path,
        *,
        data_dir: str | Path | None = None,
        subject: str = "sim",
        mode: RunMode | str = RunMode.REALTIME,
        record_frames: bool | None = None,
        node_options: dict[str, dict[str, Any]] | None = None,
        carried: dict[str, Any] | None = None,
        progress: TextIO | None = None,
        console: bool = False,
        setup: Setup | None = None,
        fresh: bool = False,
        previous: str | Path | None = None,
        rois: str = "",
        choose: dict[str, list[int]] | None = None,
        allow_pickle: bool = False,
        setup_console: bool = False,
    ) -> None:
        self.protocol = load_protocol(protocol_path)  # raises ConfigError before anything starts
        self.rig = load_rig(rig_path)
        if mode not in {m.value for m in RunMode}:
            raise ValueError(f"mode must be {' or '.join(repr(m.value) for m in RunMode)}, not {mode!r}")
        self.protocol_path, self.rig_path = str(protocol_path), str(rig_path)
        self.data_dir = Path(data_dir or self.rig.rig.data_dir)
        self.subject, self.mode = subject, RunMode(mode)
        self.record_frames = record_frames
        self.node_options = node_options or {}
        # The subject's history decides the training day and what carries over (bcirig.subjects).
        self.subject_record = Subject(self.data_dir, subject, fresh=fresh)
        self.previous = (Subject.previous_from(previous) if previous is not None
                         else None if fresh else self.subject_record.previous())
        self.day = self.subject_record.day
        self.choice = RoiChoice.from_protocol(self.protocol, rois=rois, choose=choose, allow_pickle=allow_pickle)
        if setup is None:  # what the set-up would refuse, refused now, before any folder or process exists
            check_session(self.protocol, self.rig, rois)
        # Yesterday's calibration travels with the subject unless the caller says otherwise.
        self.carried = carried if carried is not None else (self.previous.carry_forward if self.previous else None)
        self.carry_forward: dict[str, Any] | None = None
        self.progress = progress
        self.setup = setup  # None: decided in the set-up phase (or the simulated truth)
        self.setup_console = setup_console  # the operator chooses the ROIs in the set-up window
        self.setup_report: dict[str, Any] = {}
        self._sub: Subscriber | None = None
        self.setup_skip = 0
        self.stop_requested = ""  # set from another thread (request_stop): end the session cleanly
        self.started = threading.Event()  # set once every node runs (a sender may start streaming then)
        self.frames_decided = 0  # feedback messages seen: frames the task has decided
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.last_seen: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.failure = ""
        self.session_dir = Path()
        self.session_path = Path()
        self.desk = OperatorDesk(self.rig)  # the operator's requests (bcirig.control_plane)
        self.task_frame = -1  # the task's last frame, from its heartbeat: when a request arrived
        self.lost_displays: set[str] = set()
        self.nodes: tuple[str, ...] = (NODES + (("display",) if self.rig.display.kind == DisplayKind.QT else ())
                                       + (("sound",) if self.rig.sound.kind != SoundKind.NONE else ())
                                       + (("console",) if console else ()))
        if self.rig.lickport.kind != LickportKind.NONE:  # the motorised lickport (bcirig.nodes.lickport)
            self.nodes += ("lickport",)

    # ------------------------------------------------------------------ set-up
    def _specs(self, run_dir: Path, eps: dict[str, str], control: str, setup_path: Path) -> list[NodeSpec]:
        specs = []
        for name in self.nodes:
            upstream, topics, drain = WIRING[name]
            if name == "recorder":  # the GUI nodes' final counters go into the file too
                gui = [n for n in ("display", "sound", "console") if n in self.nodes]
                upstream, drain = [*upstream, *gui], [*drain, *gui]
                if "display" in self.nodes or "sound" in self.nodes:  # when the mouse saw and heard each change
                    topics = [*topics, "presentation"]
            if name == "recorder" and "lickport" in self.nodes:  # the stage's measured position per frame
                upstream, topics, drain = [*upstream, "lickport"], [*topics, "lickport"], [*drain, "lickport"]
            if name == "console":  # every node's heartbeat: the operator sees each node's health
                upstream = [n for n in self.nodes if n != "console"]
            opts = dict(self.node_options.get(name, {}))
            if name == "pipeline":  # the simulated microscope goes on after the frames the set-up saw
                opts.update(day=self.day, skip=self.setup_skip)
            if name in NICE:
                opts.setdefault("nice", NICE[name])
            if name in ("task", "recorder") and self.carried:
                opts["carried"] = json.dumps(self.carried)
            if name == "recorder":
                opts["subject"] = self.subject
                if self.record_frames is not None:
                    opts["record_frames"] = self.record_frames
            kind = str(opts.pop("node_class", name))  # a test's faulty node class, else the node itself
            specs.append(NodeSpec(
                name=name, kind=kind, run_dir=str(run_dir), endpoints=eps, control=control, upstream=upstream,
                topics=topics, drain_from=drain, protocol_path=str(Path(self.protocol_path).resolve()),
                rig_path=str(Path(self.rig_path).resolve()), setup_path=str(setup_path),
                session_path=str(self.session_path), mode=self.mode, options=opts,
            ))
        return specs

    def _start(self, specs: list[NodeSpec], log_dir: Path) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        for spec in specs:
            path = spec.save()
            log = open(log_dir / f"{spec.name}.log", "wb")  # noqa: SIM115 - owned by the child for its lifetime
            # start_new_session: a terminal's Ctrl-C or hangup reaches the supervisor only, which stops the
            # nodes in order (the valve node closes the valve) instead of every node dying at once
            self.procs[spec.name] = subprocess.Popen(
                [sys.executable, "-m", "bcirig.nodes", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
            log.close()
        (log_dir / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))
        write_endpoints(log_dir, specs[0].endpoints, specs[0].control, specs[0].protocol_path, specs[0].rig_path,
                        os.getpid())  # for `bcirig console SESSION_DIR`

    # ------------------------------------------------------------------ set-up phase
    def _decide_setup(self) -> tuple[Setup, np.ndarray | None]:
        """The set-up: given, the simulated truth, or decided by the SetupPhase stage on live frames."""
        if self.setup is not None:
            return self.setup, None
        if self.protocol.setup.rois == RoiMethod.TRUTH:
            return truth_setup(self.protocol, self.rig), None
        previous = None
        if self.previous is not None:
            prev = Setup.load(self.previous.setup_path)
            previous = PreviousSetup(rois=prev.roi_set(), reference=prev.reference, day=self.previous.day,
                                     folder=str(self.previous.session_dir))
        phase = SetupPhase(self.protocol, self.choice, previous, day=self.day)
        source = make_source(self.protocol, self.rig, day=self.day)
        if self.progress is not None:
            self.progress.write(f"bcirig: set-up: {phase.needed} live frames for the reference"
                                + (f", aligned to day {previous.day}'s field" if previous else "") + "\n")
        t0 = time.monotonic()
        source.open()
        try:
            self._stream(source, phase)
        finally:
            source.close()
        streamed = time.monotonic() - t0
        self.setup_skip = len(phase.frames) if source.paced else 0
        setup = (self._setup_in_console(phase, source) if self.setup_console
                 else phase.finish(suggest=getattr(source, "suggest_groups", None)))
        setup.report.update(stream_seconds=streamed, phase_seconds=time.monotonic() - t0,
                            frames_seconds=phase.needed / self.protocol.imaging.frame_rate_hz)
        truth = getattr(source, "setup_truth", None)  # a simulated source's ground truth, recorded beside
        if callable(truth):
            setup.report["truth"] = truth()
        if self.progress is not None:
            r = setup.report
            method = r.get("method")
            where = (f"field offset {r['fov_offset_px'][0]:+.1f}, {r['fov_offset_px'][1]:+.1f} px from day "
                     f"{r['previous_day']} (quality {r['alignment_quality']:.2f})" if method == LaterDays.PREVIOUS
                     else f"{r.get('candidates', '')} candidates" if method == RoiMethod.DETECT else method)
            self.progress.write(f"bcirig: set-up: {r['rois']} ROIs ({r.get('method')}: {where}) in "
                                f"{r['phase_seconds']:.1f} s\n")
        return setup, np.stack(phase.frames)

    def _setup_in_console(self, phase: SetupPhase, source: FrameSource) -> Setup:
        """The operator edits the ROIs on the reference in the set-up window and accepts or rejects them
        (bcirig.gui.setup_window); a rejection stops here, before any folder or file exists."""
        from bcirig.gui.setup_editor import read_answer, write_request

        info: dict[str, Any] = {"day": self.day}
        proposal = None
        try:  # what the set-up would decide without the operator: day 2's moved ROIs, a file, --choose
            proposed = phase.finish(suggest=None)
            proposal, info = proposed.roi_set(), {**info, **proposed.report}
        except SetupError as exc:
            if phase.later:
                raise
            info["note"] = str(exc)
        folder = Path(tempfile.mkdtemp(prefix="bcirig-setup-"))
        try:
            ref = phase.reference_image()
            groups = list(self.protocol.rois.groups) or ["P+", "P-"]
            write_request(folder, ref, self.protocol.imaging.bci_plane, [c.roi for c in phase.candidates()],
                          proposal, info, groups)
            cls = str(self.node_options.get("setup_window", {}).get("window_class", ""))
            cmd = [sys.executable, "-m", "bcirig.gui.setup_window", str(folder)] + (["--class", cls] if cls else [])
            if self.progress is not None:
                self.progress.write("bcirig: set-up: choose the ROIs in the set-up window, then accept (or reject)\n")
            with open(folder / "window.log", "wb") as log_file:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_file)
            while proc.poll() is None:
                if self.stop_requested:
                    proc.kill()
                    proc.wait()
                    raise SetupError(f"{self.stop_requested} during the set-up phase; nothing was recorded")
                time.sleep(0.1)
            accepted, reason, rois, answer = read_answer(folder)
            if proc.returncode != 0 and not accepted:
                log = (folder / "window.log").read_text(errors="replace").strip().splitlines()
                last = log[-1] if log else ""
                reason = f"{reason} (the window exited with {_describe_exit(proc.returncode)}: {last})"
            if not accepted or rois is None:
                raise SetupError(f"set-up rejected: {reason}; nothing was recorded")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        setup = phase.finish(chosen=rois)
        setup.report.update(operator="console", proposal=info.get("method", ""), picked=answer.get("picked", []),
                            alignment_confirmed=answer.get("alignment_confirmed"))
        for key in ("fov_offset_px", "alignment_quality", "previous_day"):
            if key in info:
                setup.report[key] = info[key]
        return setup

    def _stream(self, source: FrameSource, phase: SetupPhase) -> None:
        """Feed the phase the first volumes (wiring only: the assembler checks, the phase decides)."""
        assembler = FrameAssembler(self.protocol.imaging)
        poller = zmq.Poller()
        period = 1.0 / self.protocol.imaging.frame_rate_hz
        t0 = last = time.monotonic()
        reads = 0
        while not phase.done:
            if self.stop_requested:
                raise SetupError(f"{self.stop_requested} during the set-up phase; nothing was recorded")
            now = time.monotonic()
            if source.paced:  # the simulator: at the imaging rate (realtime) or at once (lockstep)
                if self.mode == RunMode.REALTIME and now < t0 + reads * period:
                    time.sleep(t0 + reads * period - now)
                reads += 1
            else:
                fds = source.poll_fds()
                for fd in fds:
                    poller.register(fd, zmq.POLLIN)
                poller.poll(math.ceil(source.poll_interval_s * 1000))
                for fd in fds:
                    poller.unregister(fd)
            for raw in source.read():
                volume = assembler.push(raw)
                if volume is not None:
                    phase.add(volume.data)
                    last = time.monotonic()
            if time.monotonic() - last > SETUP_TIMEOUT_S:
                why = source.stats.last_error or assembler.last_error or "nothing arrived"
                raise SetupError(f"set-up: no usable frame from the '{self.rig.source.kind}' source for "
                                 f"{SETUP_TIMEOUT_S:.0f} s after {len(phase.frames)} of {phase.needed} ({why}); "
                                 "is the microscope acquiring and sending to this rig?")

    # ------------------------------------------------------------------ running
    def run(self) -> SessionResult:
        """Run the session to its end (or failure, or a stop); returns where the file is and how it went.

        In the main thread, SIGINT, SIGTERM and SIGHUP stop the session cleanly (SAFE: grey screen, valve
        closed; then STOP and drain, so the file keeps everything up to the stop); a second one forces
        the exit, killing the node processes so none is left behind.
        """
        self._check_data_dir()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stop_requested.startswith("stopped by the user"):  # the second one: force the exit
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
            for proc in self.procs.values():
                proc.wait()
            raise SessionForced(f"forced exit on a second {name}: node processes killed (the valve controller's "
                                "watchdog closes the valve)")
        self.stop_requested = f"stopped by the user ({name})"

    def _check_data_dir(self) -> None:
        """One clear line, before anything starts, if the data directory cannot be written (tried, not
        guessed from permission bits, which do not bind root)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.data_dir):
                pass
        except OSError as exc:
            raise SessionError(f"cannot write to the data directory {self.data_dir} ({exc.strerror or exc}); "
                               "set rig.data_dir in the rig file or pass --data-dir") from None

    def _run(self) -> SessionResult:
        setup, setup_frames = self._decide_setup()
        self.setup_report = setup.report
        self.session_dir = self.subject_record.new_session_dir()
        self.session_path = self.session_dir / "session.h5"
        setup_path = self.session_dir / "setup.npz"
        setup.save(setup_path)
        if setup_frames is not None:  # the recorder puts them into the session file, then removes this
            np.save(self.session_dir / "setup_frames.npy", setup_frames)
        run_dir = Path(tempfile.mkdtemp(prefix="bcirig-"))  # short path: ipc endpoints are length-limited
        ctx = zmq.Context()
        try:
            eps = endpoints(run_dir, (*self.nodes, "supervisor"), self.rig.bus)
            control = f"ipc://{run_dir / 'control'}" if self.rig.bus.transport == Transport.IPC else \
                f"tcp://{self.rig.bus.host}:{self.rig.bus.base_port + len(self.nodes) + 1}"
            try:
                pub = Publisher(ctx, eps["supervisor"], "supervisor")
                router = ctx.socket(zmq.ROUTER)
                router.setsockopt(zmq.LINGER, 0)
                router.bind(control)
            except zmq.ZMQError as exc:
                self.failure = (f"cannot bind the supervisor's endpoints ({eps['supervisor']}, {control}): {exc}; "
                                "is another session running on this rig? (or change bus.base_port)")
                return self._result()
            sub = self._sub = Subscriber(ctx, [eps[n] for n in self.nodes],
                                         [Topic.HEARTBEAT, Topic.LOG, Topic.EVENT])
            self._start(self._specs(run_dir, eps, control, setup_path), self.session_dir)
            try:
                self._await_ready(pub, router, sub)
                pub.publish(Control(action=ControlAction.START))
                self.started.set()
                self._monitor(pub, sub, router)
            except SessionError as exc:
                self.failure = self.failure or str(exc)
            self._shutdown(pub, sub)
        finally:
            self._sub = None
            (self.session_dir / "endpoints.json").unlink(missing_ok=True)
            ctx.destroy(linger=0)  # closes every socket first: term() with one open would block for ever
            shutil.rmtree(run_dir, ignore_errors=True)
        return self._result()

    def request_stop(self, reason: str = "stopped by request") -> None:
        """End a running session cleanly from another thread: STOP, drain, close the file."""
        self.stop_requested = reason

    def _poll_messages(self, sub: Subscriber, timeout_ms: int) -> list[Any]:
        out = []
        if sub.sock.poll(timeout_ms):
            while (msg := sub.recv()) is not None:
                self.last_seen[msg.src] = time.monotonic()
                if isinstance(msg, Log) and msg.level == LogLevel.ERROR:
                    self.errors[msg.src] = msg.text
                out.append(msg)
        return out

    def _last_error(self, name: str) -> str:
        """The node's published error; else (it died before its log reached us) the last line of its log."""
        if name in self.errors:
            return self.errors[name]
        if self._sub is not None:  # its last words may still be in flight: a moment to receive them
            deadline = time.monotonic() + 0.2
            while name not in self.errors and time.monotonic() < deadline:
                self._poll_messages(self._sub, 20)
            if name in self.errors:
                return self.errors[name]
        try:
            lines = (self.session_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no error message"
        return lines[-1] if lines else "no error message"

    def _check_processes(self, allow_exit: bool = False) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None and name in DISPLAY_ONLY:
                self._lose_display(name, _describe_exit(code))
                continue
            if code is not None and (code != 0 or not allow_exit):
                err = self._last_error(name)
                raise SessionError(f"node '{name}' died ({_describe_exit(code)}): {err}; "
                                   f"log: {self.session_dir / (name + '.log')}")

    def _lose_display(self, name: str, why: str) -> None:
        """A display-only node is gone: one logged line, and the session goes on without it."""
        if name in self.lost_displays:
            return
        self.lost_displays.add(name)
        self.last_seen.pop(name, None)
        if self.progress is not None:
            self.progress.write(f"\nbcirig: the {name} is gone ({why}; log: {self.session_dir / (name + '.log')}); "
                                "the session goes on without it\n")
            self.progress.flush()

    def _serve_operator(self, router: zmq.Socket[bytes], pub: Publisher | None, running: bool) -> None:
        """Answer every waiting console request; broadcast the accepted ones (bcirig.control_plane)."""
        while router.poll(0):
            parts = router.recv_multipart()
            ident, kind = parts[0], parts[1] if len(parts) > 1 else b""
            if kind == READY:
                continue
            t_request = time.monotonic_ns()
            if kind != REQUEST or len(parts) != 3:
                answer, ctl = Answer("?", False, f"refused: not a request ({kind[:20]!r})"), None
            else:
                answer, ctl = self.desk.decide(parts[2], running=running, frame=self.task_frame,
                                               t_request_ns=t_request, source=ident.decode(errors="replace"))
            if ctl is not None and pub is not None:
                pub.publish(ctl)
            elif answer.ok and answer.command == STOP:
                self.request_stop(f"stopped by the operator ({ident.decode(errors='replace')})")
            router.send_multipart([ident, *answer.encode()])

    def _await_ready(self, pub: Publisher, router: zmq.Socket[bytes], sub: Subscriber) -> None:
        ready: set[str] = set()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while ready < set(self.nodes) - self.lost_displays:
            pub.publish(Heartbeat(node="supervisor", state=NodeState.STARTING))
            if router.poll(50):
                parts = router.recv_multipart()
                if parts[1:] == [READY]:
                    ready.add(parts[0].decode())
                else:  # an attached console asking before the session runs
                    router.send_multipart([parts[0], *Answer("?", False, "refused: the session is starting").encode()])
            self._poll_messages(sub, 0)
            self._check_processes()
            if self.stop_requested:
                raise SessionError(f"{self.stop_requested} during start-up")
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(set(self.nodes) - ready))
                raise SessionError(f"nodes not ready after {STARTUP_TIMEOUT_S:.0f} s: {missing}")

    def _monitor(self, pub: Publisher, sub: Subscriber, router: zmq.Socket[bytes] | None = None) -> None:
        started = time.monotonic()
        self.last_seen = {n: started for n in self.nodes if n not in self.lost_displays}
        next_beat = next_print = 0.0
        latest: dict[str, int] | None = None  # the task's heartbeat counters: frame, baseline, readouts
        counts = OutcomeCounts()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                pub.publish(Heartbeat(node="supervisor", state=NodeState.RUNNING))
                next_beat = now + 0.1
            for msg in self._poll_messages(sub, 100):
                if isinstance(msg, Heartbeat) and msg.src == "task" and "frame" in msg.counters:
                    latest = msg.counters
                    self.frames_decided = latest.get("readouts", 0)
                    self.task_frame = latest.get("frame", -1)
                elif isinstance(msg, Event):
                    if msg.name is EventKind.TRIAL_END:
                        counts = counts.add(TrialEnd.from_data(msg.data).outcome)
                    if msg.name is EventKind.SESSION_END:
                        self.carry_forward = msg.data.get("carry_forward")
                    if msg.name in (EventKind.SESSION_END, EventKind.SAFE_STATE):
                        if msg.name is EventKind.SAFE_STATE:
                            self.failure = self.failure or f"task went safe: {msg.data.get('reason', '')}"
                        self._print_progress(latest, counts, final=True)
                        return
            self._check_processes()
            if router is not None:
                self._serve_operator(router, pub, running=True)
            if self.stop_requested:
                self._print_progress(latest, counts, final=True)
                return
            silent = [n for n, t in self.last_seen.items() if now - t > SILENCE_TIMEOUT_S]
            for name in [n for n in silent if n in DISPLAY_ONLY]:  # hung or far behind: end it, go on
                self.procs[name].kill()
                self._lose_display(name, f"silent for more than {SILENCE_TIMEOUT_S:.0f} s; killed")
            silent = [n for n in silent if n not in DISPLAY_ONLY]
            if silent:
                raise SessionError(f"node '{silent[0]}' silent for more than {SILENCE_TIMEOUT_S:.0f} s (hung?)")
            if now >= next_print:
                self._print_progress(latest, counts)
                next_print = now + (1.0 if self.progress is not None and self.progress.isatty() else 10.0)

    def _print_progress(self, task: dict[str, int] | None, counts: OutcomeCounts, final: bool = False) -> None:
        """From the task's heartbeat (10 Hz): the supervisor does not decode every frame's feedback, which
        at 1 kHz cost a core's worth of time on the frame -> decision path."""
        if self.progress is None or task is None:
            return
        p = self.protocol
        frame = task.get("frame", -1)
        if task.get("baseline"):
            text = f"baseline {frame + 1}/{p.baseline.frames} frames"
        else:
            planned = sum(ph.trials for ph in p.phase_plan(self.day))
            text = f"trials done {counts.trials}/{planned}  hits {counts.hits}"
        line = f"  frame {frame + 1:6d}  {text}"
        if self.progress.isatty():
            self.progress.write("\r" + line.ljust(60) + ("\n" if final else ""))
        else:
            self.progress.write(line + "\n")
        self.progress.flush()

    def _shutdown(self, pub: Publisher, sub: Subscriber) -> None:
        if self.failure or self.stop_requested:
            pub.publish(Control(action=ControlAction.SAFE, reason=self.failure or self.stop_requested))
            # give the task a moment to publish its safe state so the file records it
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                if any(isinstance(m, Event) and m.name is EventKind.SAFE_STATE for m in self._poll_messages(sub, 50)):
                    break
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            pub.publish(Control(action=ControlAction.STOP, reason=self.failure or "session complete"))
            self._poll_messages(sub, 200)
            now = time.monotonic()
            for name, proc in self.procs.items():  # a hung node will not drain: stop waiting for it
                if proc.poll() is None and now - self.last_seen.get(name, now) > SILENCE_TIMEOUT_S:
                    proc.kill()
                    proc.wait()
                    if name in DISPLAY_ONLY:
                        self._lose_display(name, f"silent > {SILENCE_TIMEOUT_S:.0f} s at the stop; killed")
                        continue
                    self.failure = self.failure or f"node '{name}' hung (silent > {SILENCE_TIMEOUT_S:.0f} s); killed"
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                if name in DISPLAY_ONLY:
                    self._lose_display(name, f"did not stop within {EXIT_TIMEOUT_S:.0f} s; killed")
                    continue
                self.failure = self.failure or f"node '{name}' did not stop within {EXIT_TIMEOUT_S:.0f} s; killed"
            elif proc.returncode != 0 and name in DISPLAY_ONLY:
                self._lose_display(name, _describe_exit(proc.returncode))
            elif proc.returncode != 0 and not self.failure:
                err = self._last_error(name)
                self.failure = f"node '{name}' died ({_describe_exit(proc.returncode)}): {err}"

    def _result(self) -> SessionResult:
        summary: dict[str, Any] = {}
        recounted = False
        if self.session_path.exists():
            try:
                with SessionFile(self.session_path) as sf:
                    summary = sf.summary  # the recorder's, written as it closed the file
                    if not summary:  # the recorder died before it could: recount what it flushed
                        summary, recounted = session_summary(sf), True
            except (OSError, ValueError, KeyError) as exc:
                summary = {"error": f"could not read {self.session_path}: {exc}"}
        outcome = "completed" if not self.failure and self.carry_forward is not None else (
            "stopped" if self.stop_requested and not self.failure else "failed")
        reason = self.failure or self.stop_requested
        if self.session_path.exists() and "error" not in summary:
            import h5py

            try:
                with h5py.File(self.session_path, "a") as f:
                    if recounted:
                        f.attrs["summary"] = json.dumps(summary, allow_nan=True)
                    f.attrs["outcome"] = outcome  # completed, stopped or failed; complete: ran to its end
                    f.attrs["reason"] = reason
                    f.attrs["failure"] = self.failure
            except OSError as exc:  # a full disk: the file holds everything up to its last flush
                reason = f"{reason}; the outcome could not be written into the file ({exc})"
        summary["outcome"], summary["reason"] = outcome, reason
        self.subject_record.record(self.session_dir, outcome=outcome, setup=self.setup_report,
                                   carry_forward=self.carry_forward or {}, summary=summary,
                                   reason=self.failure or self.stop_requested)
        return SessionResult(path=self.session_path, ok=not self.failure, error=self.failure, summary=summary,
                             outcome=outcome, reason=reason)
