"""Every message that crosses the bus, defined once, with its wire encoding.

Wire format (ZeroMQ multipart): ``[topic, header, *buffers]``.

* ``topic`` is the ASCII topic name (``frame``, ``readout`` ...), used by SUB prefix filtering.
* ``header`` is UTF-8 JSON: ``kind``, ``v`` (version), ``seq`` (publisher sequence number), ``frame``
  (imaging frame index the message derives from, -1 when none), ``t_ns`` (``time.monotonic_ns()`` stamps
  added by each stage the data passed), ``f`` (the scalar fields) and ``a`` (name, dtype, shape of each
  array buffer that follows).
* every numpy array field travels as one raw buffer, sent without copying and received without copying
  (``np.frombuffer`` over the ZeroMQ frame). Nothing is ever pickled.

A receiver rejects a message whose kind it does not know or whose version differs from its own with a
:class:`WireError` that names the kind and both versions.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


class WireError(ValueError):
    """A multipart message that cannot be decoded (unknown kind, wrong version, malformed header)."""


class Topic(enum.StrEnum):
    """Data-plane topics. Each node binds one PUB socket and publishes some of these."""

    FRAME = "frame"
    READOUT = "readout"
    FEEDBACK = "feedback"
    EVENT = "event"
    COMMAND = "command"
    ACK = "ack"
    LICKPORT = "lickport"  # where the motorised lickport was on each frame (commanded and measured)
    LOG = "log"
    HEARTBEAT = "heartbeat"
    CONTROL = "control"
    PRESENTATION = "presentation"  # when a feedback change reached the mouse (display swap, sound output)


class Phase(enum.StrEnum):
    """Session phase as run by the task."""

    WAITING = "waiting"  # before the first frame
    ALIGNMENT = "alignment"  # the field of view aligned to an earlier day's (the set-up phase, before frames)
    BASELINE = "baseline"  # open loop; its readout calibrates the threshold
    CALIBRATION = "calibration"  # the threshold computed from the last baseline (no frames of its own)
    CLOSED_LOOP = "closed_loop"  # trials: feedback follows the readout, hits rewarded
    DEGRADATION = "degradation"  # trials, but rewards uncoupled from the readout, at the rate earned before
    REINSTATEMENT = "reinstatement"  # closed-loop trials again after a degradation
    SPONTANEOUS = "spontaneous"  # open loop: readout recorded, no trials (or open-loop stimuli)
    PHOTOSTIM_MAPPING = "photostim_mapping"  # marker only: another system photostimulates; grey screen
    DONE = "done"
    SAFE = "safe"


class TrialState(enum.StrEnum):
    """Where the trial state machine is on a frame."""

    NONE = "none"  # not in a trial phase (baseline, spontaneous, done, safe)
    WAITING = "waiting"  # a phase waits for the experimenter's start command
    PAUSED = "paused"  # the experimenter paused: grey, nothing evaluated, the clocks stopped
    GREY = "grey"  # grey screen at the start of a trial; the readout is not evaluated
    ACTIVE = "active"  # closed-loop feedback; hit / abort / timeout evaluated
    HIT_HOLD = "hit_hold"
    ABORT_HOLD = "abort_hold"
    TIMEOUT_HOLD = "timeout_hold"  # only when outcomes.timeout.hold_frames > 0
    ITI = "iti"


class Screen(enum.StrEnum):
    """What the mouse's monitor shows."""

    GRATING = "grating"
    GREY = "grey"
    BLACK = "black"


class Sound(enum.StrEnum):
    """What the speaker plays."""

    NONE = "none"
    WHITE_NOISE = "white_noise"
    TONE = "tone"


class Outcome(enum.StrEnum):
    """How a trial ended."""

    HIT = "hit"
    ABORT = "abort"
    TIMEOUT = "timeout"


class Action(enum.StrEnum):
    """Device actions the task can command (never free strings)."""

    REWARD = "reward"
    OPTO = "opto"
    REWARD_OPTO = "reward_opto"
    CLOSE = "close"
    FLUSH = "flush"  # open the valve for ``Command.open_ms`` (priming the line; an operator's command)


class EventKind(enum.StrEnum):
    """Entries of the session's event table."""

    SESSION_START = "session_start"
    PHASE = "phase"
    CALIBRATION = "calibration"
    TRIAL_START = "trial_start"
    TRIAL_END = "trial_end"
    LICK = "lick"  # reported by the lick sensor (valve controller), with its device time
    LICK_CONTACT = "lick_contact"  # simulated mouse's tongue on the sensor (ground truth)
    BAD_FRAME = "bad_frame"
    SOURCE_LINK = "source_link"  # the microscope's link went down or came back (counts, last error)
    SAFE_STATE = "safe_state"
    OPERATOR = "operator"  # the task applied (or refused) an experimenter's command on this frame
    UNCOUPLED_REWARD = "uncoupled_reward"  # a degradation phase's reward, given whatever the readout
    SESSION_END = "session_end"


class NodeState(enum.StrEnum):
    """A node's life, as reported in its heartbeat."""

    STARTING = "starting"
    READY = "ready"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class LogLevel(enum.StrEnum):
    """How much a node's log line matters; ``ERROR`` is what the supervisor reports on failure."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class ControlAction(enum.StrEnum):
    """Supervisor broadcasts on the control topic."""

    START = "start"  # every node reported ready: begin
    SAFE = "safe"  # a node died: stop rewarding, grey the screen
    STOP = "stop"  # drain, publish a final heartbeat, exit
    OPERATOR = "operator"  # an experimenter's command (``Control.command``), forwarded to the task


class OperatorCommand(enum.StrEnum):
    """What the experimenter can ask of a running session (console -> supervisor -> task).

    The supervisor acknowledges each request to the console and broadcasts it as a ``Control`` with
    ``action = OPERATOR``; the task applies it on its next frame and records that as an ``operator``
    event (frame, command, id, whether it was applied and why not), which replay re-applies.
    """

    NONE = "none"
    START_BASELINE = "start_baseline"  # a phase with ``start = "operator"`` waits for this (or START_TRIALS)
    START_TRIALS = "start_trials"
    PAUSE = "pause"  # grey screen, no evaluation, no reward, until RESUME
    RESUME = "resume"
    REWARD = "reward"  # a manual reward of ``Control.value`` ul (0: the protocol's volume)
    FLUSH = "flush"  # open the valve for ``Control.value`` ms to prime the line


@dataclass(frozen=True)
class TrialEnd:
    """The typed payload of a ``trial_end`` event (what the trial table and every counter read)."""

    outcome: Outcome
    start_frame: int
    frames: int  # from the trial's start to its outcome, inclusive
    reward_frame: int = -1  # the frame of its reward command, -1 for none
    phase: Phase = Phase.CLOSED_LOOP
    catch: bool = False

    def to_data(self) -> dict[str, Any]:
        """The event's ``data`` (JSON scalars)."""
        data: dict[str, Any] = {"outcome": self.outcome.value, "start_frame": self.start_frame,
                                "frames": self.frames, "reward_frame": self.reward_frame}
        if self.phase is not Phase.CLOSED_LOOP:
            data["phase"] = self.phase.value
        if self.catch:
            data["catch"] = True
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TrialEnd:
        """Back from an event's ``data`` (older files lack phase and catch)."""
        return cls(outcome=Outcome(data["outcome"]), start_frame=int(data["start_frame"]), frames=int(data["frames"]),
                   reward_frame=int(data.get("reward_frame", -1)), phase=Phase(data.get("phase", "closed_loop")),
                   catch=bool(data.get("catch", False)))


@dataclass(frozen=True)
class OutcomeCounts:
    """Trials by outcome: the one way bcirig counts them (task, summary, supervisor, console, simulation)."""

    trials: int = 0
    hits: int = 0
    aborts: int = 0
    timeouts: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits per ended trial; NaN before any."""
        return self.hits / self.trials if self.trials else float("nan")

    @classmethod
    def of(cls, outcomes: typing.Iterable[Outcome | str | bytes | None]) -> OutcomeCounts:
        """Count outcomes given as members, their strings or the file's bytes; empty and None are skipped."""
        n = {o: 0 for o in Outcome}
        for o in outcomes:
            if isinstance(o, bytes):
                o = o.decode()
            if o:
                n[Outcome(o)] += 1
        return cls(trials=sum(n.values()), hits=n[Outcome.HIT], aborts=n[Outcome.ABORT], timeouts=n[Outcome.TIMEOUT])

    def add(self, outcome: Outcome | str) -> OutcomeCounts:
        """These counts and one more trial."""
        one = OutcomeCounts.of([outcome])
        return OutcomeCounts(self.trials + 1, self.hits + one.hits, self.aborts + one.aborts,
                             self.timeouts + one.timeouts)

    def as_dict(self) -> dict[str, Any]:
        """trials, hits, aborts, timeouts, hit_rate."""
        return {"trials": self.trials, "hits": self.hits, "aborts": self.aborts, "timeouts": self.timeouts,
                "hit_rate": self.hit_rate}


@dataclass(kw_only=True)
class Message:
    """Base of every bus message. Subclasses set KIND, VERSION and TOPIC."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[Topic]
    ARRAYS: ClassVar[tuple[str, ...]] = ()

    frame: int = -1
    seq: int = 0  # per (publisher, topic); receivers count gaps
    src: str = ""  # publishing node
    t_ns: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class Frame(Message):
    """One imaging frame, ``data`` shaped (planes, height, width)."""

    KIND = "frame"
    VERSION = 2
    TOPIC = Topic.FRAME
    ARRAYS = ("data",)

    data: np.ndarray
    acq_index: int = -1  # the microscope's index of the image that completed this frame; -1 unknown
    t_acq_ns: int = -1  # its acquisition time on the microscope's clock; -1 unknown
    dropped: int = 0  # microscope images lost (index gaps) since the previous frame
    malformed: int = 0  # images rejected (shape, dtype, plane) since the previous frame
    truth: dict[str, Any] = field(default_factory=dict)  # simulator ground truth (shift, licks): scalars only


@dataclass(kw_only=True)
class Readout(Message):
    """What the pipeline computed from one frame. ``valid`` is False for a rejected frame."""

    KIND = "readout"
    VERSION = 1
    TOPIC = Topic.READOUT
    ARRAYS = ("shift", "F", "neuropil", "F0", "dff")

    valid: bool = True
    error: str = ""
    shift: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # (dy, dx) px
    corr: float = float("nan")  # registration quality: correlation with the reference
    F: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    neuropil: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    F0: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    dff: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    readout_raw: float = float("nan")  # decoder output before smoothing
    readout: float = float("nan")  # after smoothing


@dataclass(kw_only=True)
class Feedback(Message):
    """The task's verdict on one frame: what the mouse sees and hears, and whether it is rewarded."""

    KIND = "feedback"
    VERSION = 1
    TOPIC = Topic.FEEDBACK

    phase: Phase = Phase.WAITING
    state: TrialState = TrialState.NONE
    trial: int = 0  # 1-based; 0 outside trials
    trial_frame: int = 0
    screen: Screen = Screen.GREY
    angle_deg: float = float("nan")  # grating orientation, NaN when no grating
    sound: Sound = Sound.NONE
    tone_hz: float = float("nan")
    reward: bool = False  # a reward command was issued on this frame
    opto: bool = False
    readout_norm: float = float("nan")  # readout minus the baseline minimum
    threshold: float = float("nan")
    lickport_mm: float = float("nan")  # lickport feedback: where the task puts the port (mm travelled toward the mouse)
    lickport_speed_mm_s: float = float("nan")  # ... and the speed it moves it at on this frame


@dataclass(kw_only=True)
class Command(Message):
    """A device command from the task (reward, opto)."""

    KIND = "command"
    VERSION = 1
    TOPIC = Topic.COMMAND

    command_id: int
    action: Action
    reward_ul: float = 0.0
    opto_ms: float = 0.0
    open_ms: float = 0.0  # FLUSH only


@dataclass(kw_only=True)
class Ack(Message):
    """A device's acknowledgement of a command."""

    KIND = "ack"
    VERSION = 1
    TOPIC = Topic.ACK

    command_id: int
    action: Action
    ok: bool
    error: str = ""
    open_ms: float = 0.0  # valve open time actually commanded
    device_ms: int = -1  # firmware clock at execution, -1 if the device has none


@dataclass(kw_only=True)
class LickportPosition(Message):
    """Where the lickport was on one frame: the task's command and the stage's own report of its position.

    Both positions are mm travelled toward the mouse from the port's start (the rig's ``lickport.min_mm``).
    ``frame`` is the feedback frame the command came from; after a SAFE broadcast the rows of the
    retraction carry the last frame seen and ``retracting`` is true. ``t_ns`` stamps: task_out (the
    feedback's), device_in (the lickport node got it), asked (just before the position request was written) and
    device_ack (its reply was read).
    """

    KIND = "lickport"
    VERSION = 1
    TOPIC = Topic.LICKPORT

    commanded_mm: float = float("nan")  # Feedback.lickport_mm (NaN: the task did not drive the port; held at start)
    speed_mm_s: float = float("nan")  # Feedback.lickport_speed_mm_s
    measured_mm: float = float("nan")  # the stage's reported position when the node handled the frame
    moving: bool = False  # the stage said BUSY
    retracting: bool = False  # a SAFE broadcast came: the port goes back to its start


@dataclass(kw_only=True)
class Event(Message):
    """One row of the event table (trial start/end, calibration, licks, ...)."""

    KIND = "event"
    VERSION = 1
    TOPIC = Topic.EVENT

    name: EventKind
    trial: int = 0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Log(Message):
    """A human-readable line from a node; level ERROR is what the supervisor reports on failure."""

    KIND = "log"
    VERSION = 1
    TOPIC = Topic.LOG

    node: str
    level: LogLevel
    text: str


@dataclass(kw_only=True)
class Heartbeat(Message):
    """A node's periodic sign of life with its counters (sent, received, gaps, bad input)."""

    KIND = "heartbeat"
    VERSION = 1
    TOPIC = Topic.HEARTBEAT

    node: str
    state: NodeState
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class Control(Message):
    """Supervisor broadcast to all nodes."""

    KIND = "control"
    VERSION = 1
    TOPIC = Topic.CONTROL

    action: ControlAction
    reason: str = ""
    command: OperatorCommand = OperatorCommand.NONE  # with action OPERATOR
    command_id: int = 0  # the supervisor's number for the request (its acknowledgement names it)
    value: float = 0.0  # REWARD: ul; FLUSH: ms


class Presented(enum.StrEnum):
    """What changed for the mouse in a :class:`Presentation`."""

    SCREEN = "screen"  # grating, grey or black: a new screen
    ANGLE = "angle"  # the same grating at a new orientation
    SOUND = "sound"  # a sound cue began (white noise)
    TONE = "tone"  # tone feedback began, changed pitch, or ended (tone_hz NaN)


class PresentClock(enum.StrEnum):
    """What a presentation time is measured from."""

    SWAP = "swap"  # OpenGL: right after swapBuffers returned (synchronised to the refresh where it is)
    RASTER = "raster"  # no OpenGL: right after the QPainter repaint was flushed to the window system
    DAC = "dac"  # sound card: PortAudio's output-buffer DAC time, put on time.monotonic_ns()
    CALLBACK = "callback"  # sound card without a DAC time: the output callback's own time
    BUFFER = "buffer"  # rendered into a buffer (no device): when the block holding it was rendered


@dataclass(kw_only=True)
class Presentation(Message):
    """When one feedback change was actually presented: the display's swap or the sound's output.

    ``frame`` is the imaging frame whose feedback was presented. ``skipped`` counts the changes that
    arrived after the previous presentation and were replaced by this one before they could be shown.
    """

    KIND = "presentation"
    VERSION = 1
    TOPIC = Topic.PRESENTATION

    what: Presented
    screen: Screen = Screen.GREY
    angle_deg: float = float("nan")
    sound: Sound = Sound.NONE
    tone_hz: float = float("nan")
    code: int = -1  # the photodiode patch's code shown with it (bcirig.gui.photodiode); -1 none
    skipped: int = 0
    sample: int = -1  # sound: index of the change's first sample in the output stream; -1 display
    clock: PresentClock = PresentClock.SWAP
    t_update_ns: int = -1  # time.monotonic_ns() when the feedback reached the display or sound node
    t_presented_ns: int = -1  # time.monotonic_ns() of the presentation (see ``clock``)


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (Frame, Readout, Feedback, Command, Ack, LickportPosition, Event, Log, Heartbeat, Control, Presentation)
}

_BASE_FIELDS = {"frame", "seq", "src", "t_ns"}


def _enum_fields(cls: type[Message]) -> dict[str, type[enum.Enum]]:
    hints = typing.get_type_hints(cls)
    return {
        name: hint
        for name, hint in hints.items()
        if isinstance(hint, type) and issubclass(hint, enum.Enum) and not name.isupper()
    }


_ENUMS = {kind: _enum_fields(cls) for kind, cls in MESSAGE_TYPES.items()}
_SCALARS = {
    kind: tuple(
        f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS and f.name not in cls.ARRAYS
    )
    for kind, cls in MESSAGE_TYPES.items()
}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot put {type(obj).__name__} in a message header")


# An event's data is a JSON record (the events table keeps it as JSON text) and events are rare (a trial's
# end, the calibration once a session), so its lists may stay JSON. Every other header field is a scalar.
_JSON_RECORDS = {("event", "data")}
_NOT_SCALAR = (list, tuple, set, dict, np.ndarray)


def _buffer(name: str, value: Any, arrays: list[Any], buffers: list[Any]) -> None:
    arr = np.ascontiguousarray(value)
    arrays.append((name, arr.dtype.str, arr.shape))
    buffers.append(arr.data.cast("B") if arr.size else b"")


def _scalars(kind: str, name: str, d: dict[str, Any], arrays: list[Any], buffers: list[Any]) -> dict[str, Any]:
    """A dict field's scalars for the header; its numpy arrays go as buffers named ``field.key``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, np.ndarray):
            _buffer(f"{name}.{key}", value, arrays, buffers)
        elif isinstance(value, _NOT_SCALAR):
            raise WireError(f"{kind}.{name}[{key!r}] is a {type(value).__name__}: a header holds scalars only "
                            "(give an array as a numpy array; it travels as a buffer)")
        else:
            out[key] = value
    return out


def encode(msg: Message) -> list[Any]:
    """Turn a message into multipart parts; arrays become zero-copy buffers, never JSON lists."""
    kind = msg.KIND
    fields: dict[str, Any] = {}
    arrays: list[Any] = []
    buffers: list[Any] = []
    for name in msg.ARRAYS:
        _buffer(name, getattr(msg, name), arrays, buffers)
    for name in _SCALARS[kind]:
        value = getattr(msg, name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, dict) and (kind, name) not in _JSON_RECORDS:
            value = _scalars(kind, name, value, arrays, buffers)
        elif isinstance(value, _NOT_SCALAR) and (kind, name) not in _JSON_RECORDS:
            raise WireError(f"{kind}.{name} is a {type(value).__name__}: a header holds scalars only "
                            f"(an array field is one of {kind}'s ARRAYS, sent as a buffer)")
        fields[name] = value
    header = {
        "kind": kind,
        "v": msg.VERSION,
        "seq": msg.seq,
        "src": msg.src,
        "frame": msg.frame,
        "t_ns": msg.t_ns,
        "f": fields,
        "a": arrays,
    }
    head = json.dumps(header, default=_json_default, allow_nan=True, separators=(",", ":")).encode()
    return [msg.TOPIC.value.encode(), head, *buffers]


def decode(parts: typing.Sequence[Any]) -> Message:
    """Rebuild a message from multipart parts (bytes or zmq.Frame); arrays are read-only views."""
    if len(parts) < 2:
        raise WireError(f"a message needs at least [topic, header], got {len(parts)} part(s)")
    raw = parts[1]
    raw = raw.bytes if hasattr(raw, "bytes") else raw
    try:
        header = json.loads(raw)
        kind = header["kind"]
        version = header["v"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError(f"malformed message header ({exc}): {bytes(raw)[:80]!r}") from exc
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise WireError(f"unknown message kind {kind!r}; known: {sorted(MESSAGE_TYPES)}")
    if version != cls.VERSION:
        raise WireError(f"message kind {kind!r} has version {version}, this bcirig speaks {cls.VERSION}")
    specs = header.get("a", [])
    if len(parts) != 2 + len(specs):
        raise WireError(f"{kind}: header names {len(specs)} array(s) but {len(parts) - 2} buffer(s) arrived")
    kwargs: dict[str, Any] = dict(header["f"])
    for name, enum_cls in _ENUMS[kind].items():
        if name in kwargs:
            kwargs[name] = enum_cls(kwargs[name])
    for (name, dtype, shape), part in zip(specs, parts[2:], strict=True):
        buf = part.buffer if hasattr(part, "buffer") else part
        arr = np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)
        field_name, _, key = name.partition(".")  # "truth.shift": an array of a dict field
        if key:
            kwargs.setdefault(field_name, {})[key] = arr
        else:
            kwargs[name] = arr
    return cls(frame=header["frame"], seq=header["seq"], src=header.get("src", ""), t_ns=header["t_ns"], **kwargs)
