"""The operator's control plane: requests from a console to the supervisor, and the supervisor's answers.

A console (the console node, or ``bcirig console`` attached from a session folder) sends each request
over a DEALER socket to the supervisor's ROUTER (the socket the nodes report READY on)::

    console -> supervisor   [b"operator", JSON {"command": "pause", "value": 0.0, "t_ns": <sent>}]
    supervisor -> console   [b"ack", JSON {"command": "pause", "command_id": 7, "ok": true, "text": "..."}]

The supervisor checks the request (:meth:`OperatorDesk.decide`): a known command, a value within the
rig's limits, a session that is running. It answers every request with one line, and forwards an
accepted one to every node as ``Control(action=OPERATOR, command=..., command_id=..., value=...)``,
stamped with the request's arrival time (``t_ns["request"]``); the recorder writes that broadcast into
the session file's ``operator`` table and the task applies it on its next frame (an ``operator``
event). ``stop`` is the supervisor's own clean stop (SAFE, STOP, drain), not a broadcast command.

The supervisor also writes ``endpoints.json`` beside ``pids.json`` in the session folder, so that
``bcirig console SESSION_DIR`` can attach to a running session; it is removed when the session ends.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcirig.config import Rig
from bcirig.messages import Control, ControlAction, OperatorCommand

REQUEST = b"operator"
ACK = b"ack"
READY = b"ready"
STOP = "stop"  # a request, not an OperatorCommand: the supervisor's clean stop
ENDPOINTS_FILE = "endpoints.json"
COMMANDS = (*(c.value for c in OperatorCommand if c is not OperatorCommand.NONE), STOP)


def encode_request(command: str, value: float = 0.0) -> list[bytes]:
    """The multipart request a console sends over its DEALER."""
    body = {"command": command, "value": float(value), "t_ns": time.monotonic_ns()}
    return [REQUEST, json.dumps(body).encode()]


@dataclass(frozen=True)
class Answer:
    """The supervisor's answer to one request (sent back to the console that asked)."""

    command: str
    ok: bool
    text: str
    command_id: int = 0

    def encode(self) -> list[bytes]:
        """As the multipart reply (the ROUTER puts the console's identity in front)."""
        body = {"command": self.command, "command_id": self.command_id, "ok": self.ok, "text": self.text}
        return [ACK, json.dumps(body).encode()]

    @classmethod
    def decode(cls, parts: list[bytes]) -> Answer:
        """From the multipart reply; a malformed one becomes a refusal that says so."""
        try:
            if parts[0] != ACK:
                raise ValueError(f"not an answer: {parts[0][:20]!r}")
            d = json.loads(parts[1])
            return cls(command=str(d["command"]), ok=bool(d["ok"]), text=str(d["text"]),
                       command_id=int(d.get("command_id", 0)))
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            return cls(command="?", ok=False, text=f"unreadable answer from the supervisor ({exc})")


class OperatorDesk:
    """Checks each request against the rig's limits and the session's state (plain object, no sockets)."""

    def __init__(self, rig: Rig) -> None:
        v = rig.valve
        self.max_flush_ms = float(v.max_open_ms)
        self.max_reward_ul = float(v.max_open_ms) / float(v.ms_per_ul) if v.ms_per_ul > 0 else 0.0
        self.next_id = 1

    def decide(self, payload: bytes, *, running: bool, frame: int, t_request_ns: int,
               source: str) -> tuple[Answer, Control | None]:
        """The answer to one request and, if accepted, the Control to broadcast (None for stop/refused)."""
        try:
            body: dict[str, Any] = json.loads(payload)
            command = str(body["command"])
            value = float(body.get("value", 0.0))
            t_sent = int(body.get("t_ns", -1))
        except (KeyError, TypeError, ValueError) as exc:
            return Answer("?", False, f"refused: unreadable request ({exc})"), None
        if command not in COMMANDS:
            return Answer(command, False, f"refused: unknown command {command!r}; known: {', '.join(COMMANDS)}"), None
        if not running:
            return Answer(command, False, f"refused: {command}: the session is not running"), None
        if not math.isfinite(value):
            return Answer(command, False, f"refused: {command}: value {value} is not a number"), None
        if command == STOP:
            return Answer(command, True, "stopping: grey screen, valve closed, the file keeps everything"), None
        op = OperatorCommand(command)
        if op is OperatorCommand.REWARD and not 0 <= value <= self.max_reward_ul:
            return Answer(command, False, f"refused: reward {value:g} ul: expected 0 (the protocol's volume) to "
                                          f"{self.max_reward_ul:g} ul (the valve's max_open_ms)"), None
        if op is OperatorCommand.FLUSH and not 0 < value <= self.max_flush_ms:
            return Answer(command, False, f"refused: flush {value:g} ms: expected more than 0 and at most "
                                          f"{self.max_flush_ms:g} ms (the rig's valve.max_open_ms)"), None
        if op not in (OperatorCommand.REWARD, OperatorCommand.FLUSH):
            value = 0.0
        cid = self.next_id
        self.next_id += 1
        ctl = Control(action=ControlAction.OPERATOR, command=op, command_id=cid, value=value, reason=source,
                      frame=frame, t_ns={"console": t_sent, "request": t_request_ns})
        unit = " ul" if op is OperatorCommand.REWARD else " ms" if op is OperatorCommand.FLUSH else ""
        shown = f" {value:g}{unit}" if unit else ""
        return Answer(command, True, f"#{cid} {command}{shown}: sent to the task", cid), ctl


def write_endpoints(session_dir: Path, nodes: dict[str, str], control: str, protocol_path: str,
                    rig_path: str, pid: int) -> Path:
    """``endpoints.json``: what ``bcirig console`` needs to attach to the running session."""
    path = session_dir / ENDPOINTS_FILE
    path.write_text(json.dumps({"nodes": nodes, "control": control, "protocol_path": protocol_path,
                                "rig_path": rig_path, "setup_path": str(session_dir / "setup.npz"),
                                "supervisor_pid": pid}, indent=1))
    return path


def find_session(folder: str | Path) -> Path:
    """The running session's ``endpoints.json``: in ``folder``, or the newest one in its subfolders."""
    p = Path(folder)
    if (p / ENDPOINTS_FILE).is_file():
        return p / ENDPOINTS_FILE
    found = sorted(p.glob(f"*/{ENDPOINTS_FILE}"), key=lambda f: f.stat().st_mtime) if p.is_dir() else []
    if not found:
        found = sorted(p.glob(f"*/*/{ENDPOINTS_FILE}"), key=lambda f: f.stat().st_mtime) if p.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{p}: no running session here (no {ENDPOINTS_FILE} in it or its subfolders; the "
                                "supervisor writes one while a session runs)")
    return found[-1]
