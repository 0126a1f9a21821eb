"""A session file as NWB (Neurodata Without Borders), with pynwb (``pip install 'bcirig[nwb]'``).

Layout, following the Allen Institute's BCI dataset where it fits (its trials columns and its ROI
table) and NWB's standard types elsewhere:

* ``acquisition/TwoPhotonSeriesPlane<p>`` - the frames of each imaging plane (or, for a session
  recorded without frames whose rig read a TIFF folder, an external link to it), on ``ImagingPlane<p>``;
* ``processing/ophys/ImageSegmentation/roi_table`` - one ROI per row: ``image_mask`` (bcirig's mask
  weights), ``roi_name``, ``group`` (P+, P- ...), ``kind``, ``is_soma``, ``is_dendrite``, ``plane``,
  ``parent`` (a dendrite's soma);
* ``processing/ophys/Fluorescence/{F, Neuropil, F0}`` and ``processing/ophys/DfOverF/dff`` - the
  per-ROI traces the decoder saw; ``processing/ophys/motion_correction`` - the (dy, dx) correction;
* ``processing/ophys/bci_readout_raw``, ``bci_readout``, ``bci_readout_norm`` (readout minus the
  baseline minimum, the value compared with the threshold), ``bci_threshold``;
  ``processing/ophys/calibration_windows`` - the resampled baseline windows and their maxima;
* ``stimulus/grating_angle``, ``stimulus/screen``, ``stimulus/sound`` (and ``tone_frequency`` for a tone
  protocol) - what the mouse was shown; ``processing/behavior/trial_state`` - the task's state per frame;
* ``intervals/trials`` - ``start_time``, ``stop_time`` (end of the outcome frame), ``go_cue`` (start of
  closed-loop feedback, after the grey start), ``hit``, ``outcome``, ``reward_time``,
  ``threshold_crossing_times``, ``time_to_hit``, ``start_frame``, ``stop_frame``, ``reward_frame``,
  ``threshold``;
* events tables ``rewards`` (commanded; ``delivered`` from the valve's acknowledgement), ``opto`` and
  ``licks`` (the lick sensor's reports);
* the subject, the session, and in ``general`` the protocol's TOML (``notes``) and the rig's
  (``data_collection``); ``source_script`` names bcirig's version and commit.

Times are seconds from the first frame on the frame clock (``bcirig.export.common``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.config import SourceKind
from bcirig.export.common import ExportError, SessionData, load_session_data, summary_of
from bcirig.processing.rois import RoiKind
from bcirig.recording.integrity import open_session

CODES = {
    "trial_state": ("none", "grey", "active", "hit_hold", "abort_hold", "iti"),
    "screen": ("grating", "grey", "black"),
    "sound": ("none", "white_noise", "tone"),
    "phase": ("waiting", "baseline", "closed_loop", "done", "safe"),
}


def _import_pynwb() -> Any:
    try:
        import pynwb
    except ImportError:
        raise ExportError("NWB export needs pynwb, an optional extra: pip install 'bcirig[nwb]'") from None
    return pynwb


def _timing(times: np.ndarray, rate: float) -> dict[str, Any]:
    """starting_time + rate for a regular series (what NWB prefers), else explicit timestamps."""
    t = np.asarray(times, np.float64)
    if len(t) > 1 and np.allclose(np.diff(t), 1.0 / rate, rtol=0, atol=1e-9):
        return {"starting_time": float(t[0]), "rate": float(rate)}
    return {"timestamps": t}


def _codes(values: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    lookup = {n.encode(): i for i, n in enumerate(names)}
    return np.array([lookup.get(bytes(v), -1) for v in values], np.int8)


def _code_text(names: tuple[str, ...]) -> str:
    return ", ".join(f"{i} = {n}" for i, n in enumerate(names)) + " (-1 = unknown)"


def _rig_kind(rig_text: str) -> str:
    import tomllib

    try:
        return str(tomllib.loads(rig_text).get("source", {}).get("kind", "simulated"))
    except tomllib.TOMLDecodeError:
        return "simulated" if "simulated" in rig_text else "unknown"


def _subject(data: SessionData, species: str, sex: str, age: str) -> Any:
    from pynwb.file import Subject

    simulated = is_simulated(data)
    subject_id = str(data.attrs.get("subject") or data.path.parent.parent.name or "unknown")
    seed = data.attrs.get("seed", data.attrs.get("sim_seed", "?"))
    description = f"simulated mouse (bcirig.sim, source seed {seed})" if simulated else "head-fixed mouse"
    return Subject(subject_id=subject_id, species=species, sex=sex, age=age or None, description=description)


def _trial_rows(data: SessionData) -> dict[str, np.ndarray]:
    """The trial table in seconds, with reward and threshold-crossing times (Allen BCI column names)."""
    tr = data.trials
    n = len(tr["trial"])
    rate = data.frame_rate_hz
    start_f = tr["start_frame"].astype(np.int64)
    out_f = tr["outcome_frame"].astype(np.int64)
    outcome = np.array([o.decode() for o in tr["outcome"]])
    grey = int(data.protocol.get("trials", {}).get("grey_frames", 15))
    if "reward_frame" in tr:
        reward_f = tr["reward_frame"].astype(np.int64)
    else:  # older files: the reward command issued during the trial's hit hold
        cmd_f = data.commands["frame"].astype(np.int64)
        reward_f = np.full(n, -1, np.int64)
        for i in range(n):
            end = start_f[i + 1] if i + 1 < n else np.iinfo(np.int64).max
            inside = cmd_f[(cmd_f >= out_f[i]) & (cmd_f < end)]
            reward_f[i] = inside[0] if outcome[i] == "hit" and len(inside) else -1
    start_t = data.time_of(start_f)
    stop_t = data.time_of(out_f) + 1.0 / rate
    hit = outcome == "hit"
    crossing = np.where(hit, data.time_of(out_f), np.nan)
    threshold = data.feedback["threshold"]
    fb_row = {int(f): i for i, f in enumerate(data.feedback["frame"])}
    thr = np.array([threshold[fb_row[int(f)]] if int(f) in fb_row else np.nan for f in out_f], np.float64)
    return {
        "start_time": start_t, "stop_time": stop_t, "go_cue": data.time_of(start_f + grey), "hit": hit,
        "outcome": outcome, "reward_time": data.time_of(reward_f), "threshold_crossing_times": crossing,
        "time_to_hit": np.where(hit, crossing - start_t, np.nan), "start_frame": start_f, "stop_frame": out_f,
        "reward_frame": reward_f, "threshold": thr,
    }


TRIAL_COLUMNS = {
    "go_cue": "start of closed-loop feedback (after the trial's grey start), s",
    "hit": "the readout reached the threshold",
    "outcome": "hit, abort (readout below the baseline minimum) or timeout",
    "reward_time": "the reward command's frame, s (NaN without reward)",
    "threshold_crossing_times": "frame on which the readout reached the threshold, s (NaN unless a hit)",
    "time_to_hit": "threshold crossing minus trial start, s (NaN unless a hit)",
    "start_frame": "session frame number of the trial's first frame",
    "stop_frame": "session frame number of the outcome",
    "reward_frame": "session frame number of the reward command (-1 without reward)",
    "threshold": "threshold in force, readout units above the baseline minimum",
}


SIMULATED_DEFAULTS = {  # what a simulated subject stands for; a real one's metadata must be given
    "age": "P8W/",  # ISO 8601 range 'at least 8 weeks': the simulation models an adult and has no birthday
    "location": "Isocortex",  # Allen CCF term: the simulated network is a generic cortical one
    "indicator": "GCaMP-like (simulated)",
}


def is_simulated(data: SessionData) -> bool:
    """Whether the session's frames came from a simulated mouse."""
    return "sim_rule" in data.attrs or _rig_kind(data.rig_text) == SourceKind.SIMULATED


def build_nwbfile(data: SessionData, *, frames: Any = None, species: str = "Mus musculus", sex: str = "U",
                  age: str = "", indicator: str = "", location: str = "",
                  excitation_nm: float = float("nan"), experimenter: str = "", institution: str = "") -> Any:
    """An in-memory NWBFile of a session; ``frames`` is the open session's frames dataset (or None).

    Empty ``age``, ``indicator`` and ``location`` take SIMULATED_DEFAULTS for a simulated subject and stay
    unknown for a real one (nwbinspector then says so).
    """
    _import_pynwb()
    sim = is_simulated(data)
    age = age or (SIMULATED_DEFAULTS["age"] if sim else "")
    location = location or (SIMULATED_DEFAULTS["location"] if sim else "unknown")
    indicator = indicator or (SIMULATED_DEFAULTS["indicator"] if sim else "unknown")
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.data_utils import DataChunkIterator
    from pynwb import NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.event import EventsTable
    from pynwb.ophys import (
        DfOverF,
        Fluorescence,
        ImageSegmentation,
        OpticalChannel,
        RoiResponseSeries,
        TwoPhotonSeries,
    )

    a = data.attrs
    rate = data.frame_rate_hz
    info = data.protocol.get("protocol", {})
    summary = summary_of(data)
    start = dt.datetime.fromtimestamp(float(a.get("created_unix", 0.0)), tz=dt.UTC)
    trials = _trial_rows(data)
    hits = int(trials["hit"].sum())
    nwb = NWBFile(
        session_description=(f"bcirig closed-loop BCI session, protocol {info.get('name', '?')}: "
                             f"{len(trials['hit'])} trials, {hits} hits; file complete: "
                             f"{'yes' if summary.get('complete', a.get('complete')) else 'no'}"),
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bcirig:{data.path.resolve()}:{a.get('created_unix')}")),
        session_start_time=start,
        session_id=data.path.parent.name or data.path.stem,
        experiment_description=str(info.get("description", "")) or f"bcirig protocol {info.get('name', '?')}",
        protocol=str(info.get("name", "")),
        keywords=["brain-computer interface", "two-photon imaging", "closed loop", "bcirig"],
        notes=data.protocol_text,
        data_collection=f"bcirig rig file ({a.get('rig_name', '')}, mode {a.get('mode', '?')}):\n{data.rig_text}",
        source_script=f"bcirig {a.get('bcirig_version', '?')} (commit {a.get('bcirig_commit', 'unknown')})",
        source_script_file_name="bcirig/export/nwb.py",
        subject=_subject(data, species, sex, age),
        experimenter=[experimenter] if experimenter else None,
        institution=institution or None,
    )
    device = nwb.create_device(name="Microscope", description=f"two-photon microscope of rig "
                               f"{a.get('rig_name', '?')} (frame source: {_rig_kind(data.rig_text)})")
    _planes, height, width = data.reference.shape
    imaging_planes = []
    for p in range(data.planes):
        channel = OpticalChannel(name="Green", description="calcium indicator emission", emission_lambda=np.nan)
        imaging_planes.append(nwb.create_imaging_plane(
            name=f"ImagingPlane{p}", optical_channel=channel, imaging_rate=rate, device=device,
            description=f"plane {p} of {data.planes}" + (" (the BCI plane)" if p == data.bci_plane else ""),
            excitation_lambda=excitation_nm, indicator=indicator, location=location,
        ))
    frame_numbers = data.acquisition.get("frame", data.readout["frame"])
    if frames is not None and len(frames):
        idx = np.asarray(frames.file["frame_index"][:, 0], np.int64)
        for p in range(data.planes):
            def planes_of(p: int = p) -> Any:
                for i in range(len(idx)):
                    yield np.asarray(frames[i, p])
            it = DataChunkIterator(data=planes_of(), maxshape=(None, height, width), dtype=np.dtype(frames.dtype),
                                   buffer_size=64)
            nwb.add_acquisition(TwoPhotonSeries(
                name=f"TwoPhotonSeriesPlane{p}", imaging_plane=imaging_planes[p], unit="n.a.",
                data=H5DataIO(it, compression="gzip", compression_opts=4, chunks=(1, height, width)),
                description=f"raw frames of plane {p}, (frames, height, width)", **_timing(data.time_of(idx), rate),
            ))
    elif _rig_kind(data.rig_text) == SourceKind.TIFF:
        import tomllib

        tiff = tomllib.loads(data.rig_text).get("source", {}).get("tiff", {})
        nwb.add_acquisition(TwoPhotonSeries(
            name=f"TwoPhotonSeriesPlane{data.bci_plane}", imaging_plane=imaging_planes[data.bci_plane],
            external_file=[str(Path(tiff.get("directory", ".")) / tiff.get("pattern", "*.tif"))],
            starting_frame=[0], format="external", unit="n.a.", dimension=[height, width],
            description="frames were not recorded by bcirig; the microscope's TIFF files", **_timing(
                data.time_of(frame_numbers), rate)))
    ophys = nwb.create_processing_module(name="ophys", description="bcirig's pipeline: motion correction, ROI "
                                         "extraction, F0, dF/F, the decoder's readout and the calibration")
    seg = ImageSegmentation()
    ophys.add(seg)
    table = seg.create_plane_segmentation(
        name="roi_table", imaging_plane=imaging_planes[data.bci_plane],
        description="bcirig ROIs in readout order; all planes share one pixel grid, each ROI's plane is in "
                    "'plane' (image_mask holds bcirig's mask weights)")
    for name, desc in (("roi_name", "bcirig ROI name"), ("group", "decoder group (P+, P-, ... or none)"),
                       ("kind", "soma or dendrite"), ("is_soma", "a soma ROI"), ("is_dendrite", "a dendrite ROI"),
                       ("plane", "0-based imaging plane"), ("parent_roi", "a dendrite's soma ('' otherwise)")):
        table.add_column(name=name, description=desc)
    for roi in data.rois:
        mask = np.zeros((height, width), np.float32)
        mask[roi.y, roi.x] = roi.w
        table.add_roi(image_mask=mask, roi_name=roi.name, group=roi.group, kind=str(roi.kind),
                      is_soma=roi.kind == RoiKind.SOMA, is_dendrite=roi.kind == RoiKind.DENDRITE, plane=int(roi.plane),
                      parent_roi=roi.parent)
    region = table.create_roi_table_region(region=list(range(len(data.rois))), description="every bcirig ROI")
    ro = data.readout
    ro_timing = _timing(data.time_of(ro["frame"]), rate)
    fluorescence, dff = Fluorescence(), DfOverF()
    ophys.add(fluorescence)  # in the file before its series: their ROI region must share an ancestor
    ophys.add(dff)
    for n, col, d in (("F", "F", "ROI fluorescence, weighted mean of its pixels at the frame's shift"),
                      ("Neuropil", "neuropil", "mean of the ROI's neuropil annulus"),
                      ("F0", "F0", "baseline fluorescence of the neuropil-corrected trace")):
        fluorescence.add_roi_response_series(RoiResponseSeries(
            name=n, data=ro[col].astype(np.float32), rois=region, unit="a.u.", description=d, **ro_timing))
    dff.add_roi_response_series(RoiResponseSeries(
        name="dff", data=ro["dff"].astype(np.float32), rois=region, unit="n.a.",
        description="(F - c * neuropil - F0) / F0, dimensionless", **ro_timing))
    ophys.add(TimeSeries(name="motion_correction", data=ro["shift"].astype(np.float32), unit="pixels",
                         description="rigid correction (dy, dx) applied to each frame (minus the motion)", **ro_timing))
    calib = data.calibration
    zero = float(calib.get("baseline_min", np.nan))
    for n, values, d in (
        ("bci_readout_raw", ro["readout_raw"], "decoder output before smoothing"),
        ("bci_readout", ro["readout"], "decoder output after smoothing (what the task used)"),
        ("bci_readout_norm", ro["readout"] - zero, f"readout minus the baseline minimum ({zero!r}); a hit is "
                                                   "bci_readout_norm >= bci_threshold"),
    ):
        ophys.add(TimeSeries(name=n, data=np.asarray(values, np.float64), unit="a.u.", description=d, **ro_timing))
    fb = data.feedback
    fb_t = data.time_of(fb["frame"])
    fb_timing = _timing(fb_t, rate)
    ophys.add(TimeSeries(
        name="bci_threshold", data=fb["threshold"].astype(np.float64), unit="a.u.", **fb_timing,
        description=(f"hit threshold in readout units above the baseline minimum (NaN before calibration); "
                     f"calibrated for {calib.get('target_fraction', np.nan)!r} of baseline windows, reached by "
                     f"{calib.get('achieved_fraction', np.nan)!r}; rule {calib.get('rule', 'stricter')}")))
    cw = data.calibration_windows
    if cw is None:
        with open_session(data.path) as sf:
            cw = sf.table("calibration_windows")
    if len(cw.get("start", ())):
        from hdmf.common import DynamicTable, VectorData

        ophys.add(DynamicTable(name="calibration_windows", description="baseline windows resampled for the "
                               "threshold: start frame and maximum readout above the baseline minimum", columns=[
                                   VectorData(name="start_frame", description="baseline frame", data=cw["start"]),
                                   VectorData(name="maximum", description="window maximum", data=cw["maximum"])]))
    nwb.add_stimulus(TimeSeries(name="grating_angle", data=fb["angle_deg"].astype(np.float32), unit="degrees",
                                description="grating orientation shown (NaN when no grating)", **fb_timing))
    nwb.add_stimulus(TimeSeries(name="screen", data=_codes(fb["screen"], CODES["screen"]), unit="n.a.",
                                description="what the screen showed: " + _code_text(CODES["screen"]), **fb_timing))
    nwb.add_stimulus(TimeSeries(name="sound", data=_codes(fb["sound"], CODES["sound"]), unit="n.a.",
                                description="sound cue starting on the frame: " + _code_text(CODES["sound"]),
                                **fb_timing))
    if np.isfinite(fb["tone_hz"]).any():
        nwb.add_stimulus(TimeSeries(name="tone_frequency", data=fb["tone_hz"].astype(np.float32), unit="Hz",
                                    description="feedback tone frequency", **fb_timing))
    behavior = nwb.create_processing_module(name="behavior", description="the task's state per frame")
    behavior.add(BehavioralTimeSeries(name="task", time_series=[
        TimeSeries(name="trial_state", data=_codes(fb["state"], CODES["trial_state"]), unit="n.a.",
                   description="trial state: " + _code_text(CODES["trial_state"]), **fb_timing),
        TimeSeries(name="phase", data=_codes(fb["phase"], CODES["phase"]), unit="n.a.",
                   description="session phase: " + _code_text(CODES["phase"]), **fb_timing),
    ]))
    for col, desc in TRIAL_COLUMNS.items():
        nwb.add_trial_column(name=col, description=desc)
    for i in range(len(trials["hit"])):
        nwb.add_trial(**{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in trials.items()})
    _events(nwb, data, EventsTable)
    return nwb


def _events(nwb: Any, data: SessionData, EventsTable: Any) -> None:
    """Rewards, opto and licks as events tables."""
    cm, ack = data.commands, data.acks
    ok = {int(c): bool(o) for c, o in zip(ack["command_id"], ack["ok"], strict=True)}
    kinds = [a.decode() for a in cm["action"]]
    for name, want, col, unit in (("rewards", ("reward", "reward_opto"), "reward_ul", "uL"),
                                  ("opto", ("opto", "reward_opto"), "opto_ms", "ms")):
        rows = [i for i, k in enumerate(kinds) if k in want]
        if not rows:
            continue
        table = EventsTable(name=name, description=f"{name} commanded by the task (time of the command's frame); "
                            "delivered: the valve controller acknowledged it",
                            source_description="bcirig task commands and valve acknowledgements")
        table.add_column(name=f"{col}", description=f"amount commanded ({unit})")
        table.add_column(name="delivered", description="acknowledged by the valve controller")
        table.add_column(name="command_id", description="bcirig command id")
        for i in rows:
            table.add_event(timestamp=float(data.time_of(np.array([cm["frame"][i]]))[0]),
                            **{col: float(cm[col][i])}, delivered=ok.get(int(cm["command_id"][i]), False),
                            command_id=int(cm["command_id"][i]))
        nwb.add_events_table(table)
    licks = [e for e in data.events if e["name"] == "lick"]
    if licks:
        host = np.array([e["data"].get("host_ns", -1) for e in licks], np.float64)
        t = data.host_time(host)
        frame_t = data.time_of(np.array([e["frame"] for e in licks]))
        t = np.where(np.isfinite(t) & (host > 0), t, frame_t)
        order = np.argsort(t, kind="stable")
        table = EventsTable(name="licks", description="licks reported by the lick sensor, placed on the frame "
                            "clock by their arrival on the rig", source_description="valve controller lick sensor")
        table.add_column(name="device_ms", description="the controller's own clock (ms)")
        for k in order:
            table.add_event(timestamp=float(t[k]), device_ms=int(licks[k]["data"].get("device_ms", -1)))
        nwb.add_events_table(table)


def inspect(path: str | Path) -> list[Any]:
    """nwbinspector's findings on a written file (its Python API), most important first."""
    try:
        from nwbinspector import inspect_nwbfile
    except ImportError:
        raise ExportError("checking NWB files needs nwbinspector, an optional extra: pip install 'bcirig[nwb]'") \
            from None
    return sorted(inspect_nwbfile(nwbfile_path=str(path)), key=lambda m: -int(m.importance.value))


def export_nwb(session: str | Path, out: str | Path | None = None, *, frames: bool = True, **metadata: Any) -> Path:
    """Write ``session`` as NWB to ``out`` (default: beside it, ``.nwb``); returns the path written.

    ``metadata``: ``species``, ``sex``, ``age`` (ISO 8601 duration, e.g. 'P90D'), ``indicator``,
    ``location`` (an Allen CCF term), ``excitation_nm``, ``experimenter``, ``institution``.
    """
    pynwb = _import_pynwb()
    path = Path(session)
    out = Path(out) if out else path.with_suffix(".nwb")
    data = load_session_data(path)
    with open_session(path) as sf:
        data.calibration_windows = sf.table("calibration_windows")
        nwb = build_nwbfile(data, frames=sf.frames() if (frames and sf.has_frames) else None, **metadata)
        with pynwb.NWBHDF5IO(str(out), "w") as io:
            io.write(nwb)
    return out


__all__ = ["SIMULATED_DEFAULTS", "build_nwbfile", "export_nwb", "inspect", "is_simulated"]
