"""Write one session to HDF5 while it runs: readable during the session (SWMR), flushed every interval.

Rows are buffered in memory and appended per table at each flush (at most ``flush_interval_s`` apart,
and never more than one second), so a crash loses at most that interval; a killed writer leaves a file
that opens and holds everything up to the last flush.
"""

from __future__ import annotations

import contextlib
import enum
import json
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import bcirig
from bcirig.messages import (
    Ack,
    Command,
    Event,
    EventKind,
    Feedback,
    Frame,
    LickportPosition,
    Message,
    Presentation,
    Readout,
    TrialEnd,
)
from bcirig.recording import layout
from bcirig.recording.reader import SessionFile

ROOM_MARGIN_BYTES = 256 << 10


class DiskFullError(OSError):
    """The disk (or the file-size limit) has no room for the next flush."""


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(bcirig.__file__).resolve().parent,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _stamps(t_ns: dict[str, int], names: tuple[str, ...]) -> list[int]:
    return [int(t_ns.get(n, -1)) for n in names]


def _column(values: list[Any], dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Stack one column's values; a cell of the wrong size (a rejected frame's empty arrays) becomes NaN/0."""
    try:
        return np.array(values, dtype=dtype).reshape(len(values), *shape)
    except ValueError:
        out = np.zeros((len(values), *shape), dtype=dtype)
        if out.dtype.kind == "f":
            out[:] = np.nan
        for i, v in enumerate(values):
            arr = np.asarray(v)
            if arr.size == int(np.prod(shape)):
                out[i] = arr.reshape(shape)
        return out


class SessionWriter:
    """Appends bus messages to a session file; one instance per session, used by the recorder node or inline."""

    def __init__(
        self,
        path: str | Path,
        *,
        protocol_text: str,
        rig_text: str,
        rois: dict[str, np.ndarray],
        n_rois: int,
        reference: np.ndarray,
        frame_shape: tuple[int, ...],
        frame_dtype: str,
        record_frames: bool,
        truth_fields: dict[str, tuple[tuple[int, ...], str]] | None = None,
        attrs: dict[str, Any] | None = None,
        flush_interval_s: float = 0.5,
        setup_frames: np.ndarray | None = None,
        setup_report: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = min(1.0, flush_interval_s)
        self.record_frames = record_frames
        self.frame_shape = tuple(frame_shape)
        self.f = h5py.File(self.path, "w", libver="latest")
        a = self.f.attrs
        a["format"] = layout.FORMAT
        a["version"] = layout.VERSION
        a["bcirig_version"] = bcirig.__version__
        a["bcirig_commit"] = _git_commit()
        a["protocol"] = protocol_text
        a["rig"] = rig_text
        a["created_unix"] = time.time()
        a["complete"] = False
        for k, v in (attrs or {}).items():
            # h5py refuses str subclasses: an enum member (a learning rule, a level) is stored as its value.
            if isinstance(v, enum.Enum):
                v = v.value
            a[k] = v if isinstance(v, str | int | float | bool) else json.dumps(v)
        g = self.f.create_group("rois")
        for name, arr in rois.items():
            g.create_dataset(name, data=arr)
        self.f.create_dataset("reference", data=np.asarray(reference, dtype=np.float32))
        sg = self.f.create_group("setup")  # how the set-up was decided, and the live frames it was decided on
        sg.attrs["report"] = json.dumps(setup_report or {}, allow_nan=True)
        if setup_frames is not None and len(setup_frames):
            sg.create_dataset("frames", data=setup_frames, chunks=(1, *setup_frames.shape[1:]), compression="lzf")
        self.columns = layout.tables(n_rois, truth_fields or {})
        self.row_bytes = {t: sum(np.dtype(d).itemsize * max(1, int(np.prod(s))) for _, d, s in cols)
                          for t, cols in self.columns.items()}
        self.ended = False  # the session_end event was written: the session ran to its end
        self.buffers: dict[str, list[tuple[Any, ...]]] = {t: [] for t in self.columns}
        for table, cols in self.columns.items():
            tg = self.f.create_group(table)
            for name, dtype, shape in cols:
                # Chunks of ~64 KiB whatever the row width, LZF-compressed: mostly-empty text columns
                # (errors, event JSON) cost almost nothing, and compression is cheap enough per flush.
                row_bytes = np.dtype(dtype).itemsize * max(1, int(np.prod(shape)))
                rows = int(np.clip(65536 // row_bytes, 16, 8192))
                tg.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                  chunks=(rows, *shape), compression="lzf", shuffle=row_bytes > 1)
        self.frame_buffer: list[np.ndarray] = []
        self.frame_index_buffer: list[tuple[int, int]] = []
        if record_frames:
            self.f.create_dataset("frames", shape=(0, *frame_shape), maxshape=(None, *frame_shape),
                                  dtype=frame_dtype, chunks=(1, *frame_shape))
        self.f.create_dataset("frame_index", shape=(0, 2), maxshape=(None, 2), dtype=np.int64, chunks=(4096, 2))
        self.f.swmr_mode = True
        self.last_flush = time.monotonic()
        self.rows = 0
        self.closed = False

    # ------------------------------------------------------------------------------------ writing
    def write(self, msg: Message) -> None:
        """Buffer one message's row(s); unknown kinds (heartbeat, log) are not session data."""
        if isinstance(msg, Frame):
            self._frame(msg)
        elif isinstance(msg, Readout):
            self._row("readout", (msg.frame, msg.seq, msg.valid, msg.error.encode()[:160], msg.shift, msg.corr,
                                  msg.F, msg.neuropil, msg.F0, msg.dff, msg.readout_raw, msg.readout,
                                  _stamps(msg.t_ns, layout.READOUT_STAMPS)))
        elif isinstance(msg, Feedback):
            self._row("feedback", (msg.frame, msg.seq, msg.phase.value, msg.state.value, msg.trial, msg.trial_frame,
                                   msg.screen.value, msg.angle_deg, msg.sound.value, msg.tone_hz, msg.reward,
                                   msg.opto, msg.readout_norm, msg.threshold, msg.lickport_mm,
                                   msg.lickport_speed_mm_s, _stamps(msg.t_ns, layout.FEEDBACK_STAMPS)))
        elif isinstance(msg, Command):
            self._row("commands", (msg.frame, msg.command_id, msg.action.value, msg.reward_ul, msg.opto_ms,
                                   msg.open_ms, _stamps(msg.t_ns, layout.COMMAND_STAMPS)))
        elif isinstance(msg, Ack):
            self._row("acks", (msg.frame, msg.command_id, msg.action.value, msg.ok, msg.error.encode()[:160],
                               msg.open_ms, msg.device_ms, _stamps(msg.t_ns, layout.ACK_STAMPS)))
        elif isinstance(msg, Event):
            self._event(msg)
        elif isinstance(msg, LickportPosition):
            self._row("lickport", (msg.frame, msg.commanded_mm, msg.speed_mm_s, msg.measured_mm, msg.moving,
                                   msg.retracting, msg.t_ns.get("device_ack", -1)))
        elif isinstance(msg, Presentation):
            self._row("presentation", (msg.frame, msg.src, msg.what.value, msg.screen.value, msg.angle_deg,
                                       msg.sound.value, msg.tone_hz, msg.code, msg.skipped, msg.sample,
                                       msg.clock.value, msg.t_update_ns, msg.t_presented_ns))
        self.maybe_flush()

    def _frame(self, msg: Frame) -> None:
        self._row("acquisition", (msg.frame, msg.acq_index, msg.t_acq_ns, msg.t_ns.get("source", -1), msg.dropped,
                                  msg.malformed))
        if self.record_frames and msg.data.shape == self.frame_shape:
            self.frame_buffer.append(np.array(msg.data))
            self.frame_index_buffer.append((msg.frame, msg.t_ns.get("source", -1)))
        if len(self.columns["truth"]) > 1 and msg.truth:
            row: list[Any] = [msg.frame]
            for name, dtype, shape in self.columns["truth"][1:]:
                row.append(np.asarray(msg.truth.get(name, np.zeros(shape)), dtype=dtype).reshape(shape))
            self._row("truth", tuple(row))

    def abort(self) -> None:
        """Close after a failure: flush what fits (a full disk refuses the flush: the last one stands), never
        mark complete. What was flushed before stays readable."""
        if self.closed:
            return
        with contextlib.suppress(DiskFullError, OSError, RuntimeError):
            self.flush()
        self.f.close()
        self.closed = True
        try:
            with h5py.File(self.path, "a") as f:
                f.attrs["complete"] = False
                f.attrs["closed_cleanly"] = True
                f.attrs["closed_unix"] = time.time()
        except OSError:  # a full disk may refuse even the attribute: the file still opens as it was
            pass

    def _room(self) -> int:
        """Bytes the file may still grow by: free disk, or the process's file-size limit if lower."""
        free = shutil.disk_usage(self.path.parent).free
        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit != resource.RLIM_INFINITY:
            free = min(free, limit - self.path.stat().st_size)
        return int(free)

    def _check_room(self, pending: int, what: str) -> None:
        """Refuse a write the disk (or the file-size limit) has no room for: HDF5 writing into a full disk
        can corrupt the file or crash the process, while refusing keeps what was flushed intact."""
        needed = 2 * pending + ROOM_MARGIN_BYTES  # chunks, metadata and compression slack
        free = self._room()
        if free < needed:
            raise DiskFullError(f"{self.path}: no room to record {what} (needs ~{needed / 1e6:.1f} MB, "
                                f"{max(free, 0) / 1e6:.1f} MB free); the file keeps everything up to its last flush")

    def _event(self, msg: Event) -> None:
        data = dict(msg.data)
        if msg.name is EventKind.CALIBRATION:
            starts = data.pop("window_starts", [])
            maxima = data.pop("window_maxima", [])
            for s, m in zip(starts, maxima, strict=True):
                self._row("calibration_windows", (s, m))
        if msg.name is EventKind.SESSION_END:
            self.ended = True
        if msg.name is EventKind.TRIAL_END:
            end = TrialEnd.from_data(data)
            self._row("trials", (msg.trial, end.start_frame, end.outcome.value.encode(), msg.frame, end.frames,
                                 end.reward_frame, end.phase.value.encode(), end.catch))
        text = json.dumps(data, allow_nan=True).encode()
        if len(text) > 2048:
            text = json.dumps({"truncated": text[:1900].decode(errors="replace")}).encode()
        self._row("events", (msg.frame, msg.name.value, msg.trial, text, msg.t_ns.get("sent", -1)))

    def _row(self, table: str, row: tuple[Any, ...]) -> None:
        self.buffers[table].append(row)
        self.rows += 1

    def write_operator(self, frame: int, command_id: int, command: str, value: float, source: str,
                       t_ns: dict[str, int]) -> None:
        """One experimenter's request as the supervisor broadcast it (the ``operator`` table)."""
        self._row("operator", (frame, command_id, command.encode(), value, source.encode()[:32],
                               _stamps(t_ns, layout.OPERATOR_STAMPS)))

    def write_node_counters(self, counters: dict[str, dict[str, int]]) -> None:
        """Each node's final counters (messages sent, gaps, bad frames), one row per node."""
        for node, c in sorted(counters.items()):
            self._row("nodes", (node, json.dumps(c).encode()))

    # ------------------------------------------------------------------------------------ flushing
    def maybe_flush(self) -> None:
        """Flush if the flush interval has passed since the last one."""
        if time.monotonic() - self.last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Append all buffered rows and make them visible to SWMR readers; DiskFullError if there is no room.

        The tables (every value a decision used, small) go first; the raw frames (large) only if they fit
        as well, so a filling disk costs frames before it costs any decision.
        """
        self._check_room(sum(len(rows) * self.row_bytes[t] for t, rows in self.buffers.items()), "the tables")
        for table, rows in self.buffers.items():
            if not rows:
                continue
            cols = self.columns[table]
            g = self.f[table]
            n0 = g[cols[0][0]].shape[0]
            for i, (name, dtype, shape) in enumerate(cols):
                data = _column([r[i] for r in rows], dtype, shape)
                ds = g[name]
                ds.resize(n0 + len(rows), axis=0)
                ds[n0:] = data
            rows.clear()
        if self.frame_index_buffer:
            try:
                self._check_room(sum(f.nbytes for f in self.frame_buffer) + 16 * len(self.frame_index_buffer),
                                 f"{len(self.frame_index_buffer)} raw frames")
            except DiskFullError:
                self.f.flush()  # the tables written above are kept
                raise
            idx = self.f["frame_index"]
            n0 = idx.shape[0]
            idx.resize(n0 + len(self.frame_index_buffer), axis=0)
            idx[n0:] = np.asarray(self.frame_index_buffer, dtype=np.int64)
            if self.record_frames:
                fr = self.f["frames"]
                fr.resize(n0 + len(self.frame_buffer), axis=0)
                fr[n0:] = np.stack(self.frame_buffer)
            self.frame_buffer.clear()
            self.frame_index_buffer.clear()
        self.f.flush()
        self.last_flush = time.monotonic()

    def close(self, summary: dict[str, Any] | None = None, *, complete: bool | None = None,
              summarize: Callable[[SessionFile], dict[str, Any]] | None = None) -> None:
        """Flush, close, then mark the file closed. ``complete`` (default: the session_end event was written)
        says the session ran to its end; a stopped or failed session's file is closed but not complete.
        ``summarize(file)`` computes the session's summary from what the file now holds (the recorder and
        the simulation pass :func:`bcirig.summary.session_summary`); ``summary`` adds keys to it, or alone
        is the summary."""
        if self.closed:
            return
        self.flush()
        self.f.close()
        self.closed = True
        complete = self.ended if complete is None else complete
        if summarize is not None:
            with SessionFile(self.path) as sf:
                summary = {**summarize(sf), "complete": complete, **(summary or {})}
        with h5py.File(self.path, "a") as f:
            f.attrs["complete"] = complete
            f.attrs["closed_cleanly"] = True
            f.attrs["closed_unix"] = time.time()
            if summary is not None:
                f.attrs["summary"] = json.dumps(summary, allow_nan=True)
