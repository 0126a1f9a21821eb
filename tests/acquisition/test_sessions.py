"""A whole realtime session from each way in, with the frames in the file identical to what was sent.

Each test streams a synthetic movie (known pixels, ROIs and reference) into a real session run by the
supervisor (pipeline, task, valve and recorder processes over ZeroMQ, HDF5 recording), then checks the
recorded frames pixel for pixel against the movie by the microscope's index in the acquisition table,
and the counts of what was dropped or malformed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bcirig.processing.synthetic import Movie, make_movie
from bcirig.recording import SessionFile
from bcirig.setup import Setup
from bcirig.supervisor import SessionResult, Supervisor

pytestmark = pytest.mark.slow

H, W, RATE = 64, 80, 200.0

PROTOCOL = f"""
[protocol]
name = "live-e2e"
[imaging]
height = {H}
width = {W}
frame_rate_hz = {RATE}
[registration]
max_shift_px = 8.0
[readout]
neuropil_outer_px = 6.0
[readout.f0]
window_frames = 100
[baseline]
frames = 200
[trials]
count = 2
length_frames = 60
grey_frames = 5
[outcomes.hit]
hold_frames = 10
iti_frames = 5
[outcomes.abort]
hold_frames = 10
iti_frames = 5
[outcomes.timeout]
iti_frames = 10
noise_at_iti_frame = -1
"""

RIG = """
[rig]
name = "live-e2e"
[source]
kind = "{kind}"
{table}
[valve]
kind = "simulated"
[sound]
kind = "buffer"
"""


def movie() -> Movie:
    return make_movie(40, H, W, 4, max_shift=3.0, seed=11)


def run(tmp_path: Path, kind: str, table: str, feed: Callable[[Supervisor], None]) -> tuple[SessionResult, Movie]:
    """Start a realtime session on a rig of ``kind``, call ``feed`` once it runs, return how it ended."""
    mv = movie()
    (tmp_path / "p.toml").write_text(PROTOCOL)
    (tmp_path / "rig.toml").write_text(RIG.format(kind=kind, table=table))
    setup = Setup(rois=mv.rois.to_arrays(), reference=mv.reference, truth_fields={})
    sup = Supervisor(tmp_path / "p.toml", tmp_path / "rig.toml", data_dir=tmp_path / "data", subject="M1",
                     mode="realtime", setup=setup)
    out: dict[str, SessionResult] = {}
    runner = threading.Thread(target=lambda: out.update(r=sup.run()), daemon=True)
    runner.start()
    assert sup.started.wait(60), "the session did not start"
    feeder = threading.Thread(target=feed, args=(sup,), daemon=True)
    feeder.start()
    runner.join(timeout=120)
    assert not runner.is_alive(), "the session did not end"
    return out["r"], mv


def assert_frames_as_sent(result: SessionResult, mv: Movie, expect_index: Callable[[np.ndarray], np.ndarray]) -> None:
    assert result.ok, result.error
    assert result.summary["trials"] == 2
    with SessionFile(result.path) as sf:
        frames = sf.frames()[:, 0]
        acq = sf.table("acquisition")
        assert len(frames) == len(acq["frame"]) == result.summary["frames_processed"] > 200
        movie_frame = expect_index(acq["acq_index"])
        for k in range(len(frames)):  # every recorded frame, pixel for pixel
            np.testing.assert_array_equal(frames[k], mv.frames[movie_frame[k], 0], err_msg=f"frame {k}")


def test_network_source_fed_by_bcirig_send(tmp_path: Path, free_port: int) -> None:
    np.save(tmp_path / "movie.npy", movie().frames[:, 0])
    sender: list[subprocess.Popen[str]] = []

    def feed(sup: Supervisor) -> None:
        sender.append(subprocess.Popen(
            [sys.executable, "-m", "bcirig.cli", "send", str(tmp_path / "movie.npy"), "--rate", str(RATE),
             "--to", f"tcp://127.0.0.1:{free_port}", "--loop", "--count", "3000", "--drop", "50"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    result, mv = run(tmp_path, "network", f"[source.network]\nport = {free_port}", feed)
    sender[0].kill()
    sender[0].communicate()
    # --drop 50 skips every 50th index: the session counts them as dropped, exactly
    n = result.summary["frames_processed"]
    with SessionFile(result.path) as sf:
        acq = sf.table("acquisition")
        idx = acq["acq_index"]
        assert (idx % 50 != 49).all()
        expected_gaps = int(np.sum((np.arange(idx[0], idx[-1] + 1) % 50) == 49))
        assert acq["dropped"].sum() == expected_gaps == result.summary["dropped_frames"] > 0
        assert acq["t_acq_ns"].min() > 0 and (acq["t_arrive_ns"] >= acq["t_acq_ns"]).all()
    assert n > 200
    assert_frames_as_sent(result, mv, lambda idx: idx % len(mv.frames))


def test_cloose_stream_from_a_matlab_style_server_that_drops_the_link(tmp_path: Path, free_port: int) -> None:
    """CLOOSE's layout (column-major, big-endian uint16); the rig connects as a client, as CLOOSE does.
    The sender closes the connection after 150 frames and accepts a new one: the session survives."""
    mv = movie()
    sent: list[int] = []
    server = socket.create_server(("127.0.0.1", free_port))

    def feed(sup: Supervisor) -> None:
        i = 0
        for connection in range(2):
            conn, _ = server.accept()
            with conn:
                t0 = time.monotonic()
                while not sup.stop_requested and (connection == 1 or i < 150):
                    k = i - (0 if connection == 0 else 150)
                    while time.monotonic() < t0 + k / RATE:
                        time.sleep(0.0005)
                    img = mv.frames[i % len(mv.frames), 0]
                    try:
                        conn.sendall(img.astype(">u2").tobytes(order="F"))
                    except OSError:
                        return
                    sent.append(i)
                    i += 1

    table = f'[source.cloose]\nport = {free_port}\nelement_order = "column_major"\nbyte_order = "big"'
    result, mv = run(tmp_path, "cloose", table, feed)
    server.close()
    assert result.summary["source_reconnects"] == 1
    with SessionFile(result.path) as sf:
        links = [e for e in sf.events() if e["name"] == "source_link"]
        assert [(e["data"]["disconnects"], e["data"]["reconnects"]) for e in links] == [(1, 0), (1, 1)]
    # CLOOSE's stream carries no index: the receiver counts, so frame k is the k-th frame received
    assert_frames_as_sent(result, mv, lambda idx: idx % len(mv.frames))


def test_tiff_folder_written_while_the_session_runs(tmp_path: Path) -> None:
    """An acquisition program writing a TIFF stack page by page, with a rollover to a second file."""
    mv = movie()
    folder = tmp_path / "acq"
    folder.mkdir()

    def feed(sup: Supervisor) -> None:
        i = 0
        for part in range(2):
            with tifffile.TiffWriter(folder / f"file_{part:05d}.tif") as tif:
                t0 = time.monotonic()
                for k in range(400):
                    if sup.stop_requested or not sup.started.is_set():
                        return
                    while time.monotonic() < t0 + k / RATE:
                        time.sleep(0.0005)
                    tif.write(mv.frames[i % len(mv.frames), 0], contiguous=False)
                    tif._fh.flush()  # what an acquisition program does: each page on disk as it is acquired
                    i += 1

    result, mv = run(tmp_path, "tiff", f'[source.tiff]\ndirectory = "{folder}"\npoll_ms = 2', feed)
    assert_frames_as_sent(result, mv, lambda idx: idx % len(mv.frames))
