"""Subjects and their days: where a subject's sessions go, which training day this is, and what carries over.

A subject's folder ``<data_dir>/<subject>/`` holds one folder per session (``<YYYY-MM-DD>_<n>``) and
``subject.json``, the subject's history: one entry per session with its folder, date, training day, the
set-up it used (how the ROIs were chosen, the field-of-view offset found and its match quality), its
outcome, and the calibration it hands on. A training day is a session that completed; a failed or
stopped session is recorded but does not count, so the next run is the same day again.

What the next day starts from (:meth:`Subject.previous`): the last completed session's set-up (its
``setup.npz``: ROIs and reference image) and its calibration ("carry forward"; the protocol's
across-day rule decides what the task does with it).

A history that cannot be read is never overwritten silently: the error says so and offers the two
ways on (start afresh, keeping the unreadable file beside it; or name the session to continue from).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HISTORY = "subject.json"
LEGACY_STATE = "state.json"  # bcirig 0.1's carried calibration, read when no history exists
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SubjectError(ValueError):
    """The subject's history cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Previous:
    """What a session continues from: an earlier session's folder, set-up file and calibration."""

    session_dir: Path
    setup_path: Path
    carry_forward: dict[str, Any]
    day: int


def session_folder(base: Path, day: dt.date | None = None) -> Path:
    """Create and return ``base/<YYYY-MM-DD>_<n>``, n counting up from 1; safe against a concurrent caller.

    ``mkdir`` without ``exist_ok`` is atomic: of two processes asking at once, one gets ``_1`` and the other
    moves on to ``_2`` (checking for existence first and creating afterwards raced).
    """
    stamp = (day or dt.date.today()).isoformat()
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / f"{stamp}_{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


class Subject:
    """One animal's history under a data directory."""

    def __init__(self, data_dir: str | Path, name: str, *, fresh: bool = False) -> None:
        """``fresh``: start at day 1, setting any history aside (kept, renamed) without reading it."""
        if not _NAME.match(name):
            raise SubjectError(f"subject name {name!r}: use letters, digits, '_', '-' or '.' (it names a folder)")
        self.name = name
        self.folder = Path(data_dir) / name
        self.history_path = self.folder / HISTORY
        self.set_aside_as: Path | None = None
        if fresh:
            self.set_aside_as = self.set_aside()
        self.sessions: list[dict[str, Any]] = [] if fresh else self._load()

    # ------------------------------------------------------------------ history
    def _load(self) -> list[dict[str, Any]]:
        path = self.history_path
        if not path.is_file():
            return self._legacy()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            sessions = data["sessions"]
            if not isinstance(sessions, list) or not all(isinstance(s, dict) and "folder" in s for s in sessions):
                raise ValueError("'sessions' is not a list of sessions with a 'folder'")
            return sessions
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise SubjectError(
                f"{path}: the subject's history cannot be read ({type(exc).__name__}: {exc}). Either start "
                f"afresh with --fresh (the unreadable file is kept beside it), or continue from a session with "
                f"--previous SESSION_FOLDER") from None

    def _legacy(self) -> list[dict[str, Any]]:
        """A subject written by bcirig 0.1 (state.json with the last calibration) becomes one history entry."""
        path = self.folder / LEGACY_STATE
        if not path.is_file():
            return []
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            last = Path(state["last_session"])
            return [{"folder": last.parent.name, "date": "", "day": 1, "outcome": "completed",
                     "carry_forward": state.get("carry_forward") or {}, "setup": {}}]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise SubjectError(f"{path}: not readable ({exc}); start afresh with --fresh") from None

    def set_aside(self) -> Path | None:
        """Start afresh: move an unreadable (or any) history aside, never delete it; returns where it went."""
        self.sessions = []
        if not self.history_path.exists():
            return None
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = self.history_path.with_name(f"{HISTORY}.set-aside-{stamp}")
        self.history_path.rename(aside)
        return aside

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.history_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"subject": self.name, "sessions": self.sessions}, indent=1, allow_nan=True))
        tmp.replace(self.history_path)  # atomic: a crash leaves the old history or the new one

    # ------------------------------------------------------------------ days
    @property
    def completed(self) -> list[dict[str, Any]]:
        """Sessions that ran to their end: the training days so far."""
        return [s for s in self.sessions if s.get("outcome") == "completed"]

    @property
    def day(self) -> int:
        """The training day the next session is: 1 + the completed sessions so far."""
        return len(self.completed) + 1

    def previous(self) -> Previous | None:
        """The last completed session (None on day 1)."""
        done = self.completed
        if not done:
            return None
        last = done[-1]
        return self.previous_from(self.folder / last["folder"], last.get("carry_forward") or {},
                                  int(last.get("day", len(done))))

    @staticmethod
    def previous_from(session_dir: str | Path, carry_forward: dict[str, Any] | None = None,
                      day: int = 0) -> Previous:
        """Continue from a named session folder (its setup.npz; calibration from its file if not given)."""
        folder = Path(session_dir)
        setup = folder / "setup.npz"
        if not setup.is_file():
            raise SubjectError(f"{folder}: no setup.npz here; name a session folder of this subject")
        if carry_forward is None:
            carry_forward = _carry_forward_of(folder / "session.h5")
        return Previous(session_dir=folder, setup_path=setup, carry_forward=carry_forward, day=day)

    def new_session_dir(self) -> Path:
        """A new session folder for today."""
        return session_folder(self.folder)

    def record(self, session_dir: Path, *, outcome: str, setup: dict[str, Any], carry_forward: dict[str, Any],
               summary: dict[str, Any] | None = None, reason: str = "") -> dict[str, Any]:
        """Add a session to the history (and save it); returns the entry."""
        day = self.day
        entry = {"folder": session_dir.name, "date": dt.date.today().isoformat(),
                 "day": day if outcome == "completed" else None, "outcome": outcome, "reason": reason,
                 "setup": setup, "carry_forward": carry_forward if outcome == "completed" else {},
                 "summary": {k: (summary or {}).get(k) for k in ("trials", "hits", "hit_rate", "threshold")}}
        self.sessions.append(entry)
        self._save()
        return entry


def _carry_forward_of(session: Path) -> dict[str, Any]:
    """The calibration a finished session handed on (from its session_end event)."""
    if not session.is_file():
        return {}
    from bcirig.recording import SessionFile

    with SessionFile(session) as sf:
        end = next((e for e in sf.events() if e["name"] == "session_end"), None)
    return dict(end["data"].get("carry_forward", {})) if end else {}
