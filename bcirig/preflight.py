"""Checks of a protocol on a rig that need more than the two files: made before a session starts anything.

:func:`bcirig.config.load_protocol` and :func:`~bcirig.config.load_rig` validate each file on its own.
What only the pair decides is checked here, by building what the session's set-up would build, so that
``bcirig validate`` and ``bcirig run`` refuse the same things with the same one line (a
:class:`~bcirig.schema.ConfigError`) before any folder or process exists. For a simulated rig that is
the simulated mouse (its ``[simulation]`` table, a network with room for the BCI units, a field of view
that holds their somata) and the decoder on the mouse's ROIs. The simulator is imported only for a
simulated rig: a real rig's validation never loads it.
"""

from __future__ import annotations

from bcirig.config import FeedbackKind, Protocol, Rig, RoiMethod, SoundKind, SourceKind
from bcirig.schema import ConfigError

__all__ = ["check_session"]

_FROM_FILE = (RoiMethod.FILE, RoiMethod.IMAGEJ, RoiMethod.SUITE2P)  # the ROI methods that read a file


def check_session(protocol: Protocol, rig: Rig, rois: str = "") -> None:
    """Raise ConfigError if ``protocol`` cannot run on ``rig``; return None when the session can start.

    ``rois``: a ROI file or folder given on the command line instead of ``setup.roi_file``.
    """
    _check_setup(protocol, rig, rois)
    _check_sound(protocol, rig)
    _check_lickport(protocol, rig)
    if rig.source.kind == SourceKind.SIMULATED:
        _check_simulated(protocol, rig)


def _check_setup(protocol: Protocol, rig: Rig, rois: str) -> None:
    """The set-up phase's choices: a ROI file that exists, the true footprints only where there are any."""
    from pathlib import Path

    from bcirig.setup import RoiChoice

    file = protocol.source_path or "<protocol>"
    choice = RoiChoice.from_protocol(protocol, rois=rois)
    if choice.method == RoiMethod.TRUTH and rig.source.kind != SourceKind.SIMULATED:
        raise ConfigError(file, "setup.rois", choice.method,
                          f"detect, file, imagej or suite2p on a rig whose source is '{rig.source.kind}' "
                          "(only a simulated field has true footprints)")
    if choice.method in _FROM_FILE:
        if not choice.path:
            raise ConfigError(file, "setup.roi_file", "", f"the ROI file (or suite2p folder) when setup.rois = "
                                                          f"'{choice.method}', or --rois FILE")
        if not Path(choice.path).exists():
            key = "--rois" if rois else "setup.roi_file"
            raise ConfigError(file, key, choice.path, "an existing file or folder")


def _check_lickport(protocol: Protocol, rig: Rig) -> None:
    """Lickport feedback needs a lickport, and travel for the distance the task moves it."""
    from bcirig.config import LickportKind

    file = protocol.source_path or "<protocol>"
    fb = protocol.feedback
    if fb.kind is not FeedbackKind.LICKPORT:
        return
    if rig.lickport.kind is LickportKind.NONE:
        raise ConfigError(file, "feedback.kind", fb.kind.value, "a feedback this rig has: its [lickport] kind is "
                          "'none' (hardware/rigs/sim-lickport.toml is a simulated rig with one)")
    for key in ("lickport_max_speed_mm_s", "lickport_retract_mm_s"):
        if getattr(fb, key) > rig.lickport.max_speed_mm_s:
            raise ConfigError(file, f"feedback.{key}", getattr(fb, key),
                              f"<= the rig's lickport.max_speed_mm_s ({rig.lickport.max_speed_mm_s:g}): the stage "
                              "could not keep up, and a hit would be declared before the port arrived")
    travel = rig.lickport.max_mm - rig.lickport.min_mm
    if fb.lickport_travel_mm > travel + 1e-9:
        raise ConfigError(file, "feedback.lickport_travel_mm", fb.lickport_travel_mm,
                          f"<= the rig's lickport travel, max_mm - min_mm = {travel:g} mm")


def _check_simulated(protocol: Protocol, rig: Rig) -> None:
    from bcirig.acquisition.simulated import make_mouse
    from bcirig.processing.decoders import make_decoder
    from bcirig.processing.rois import RoiError

    # The very construction the set-up makes (bcirig.setup.prepare_setup), without rendering a frame:
    # parse_sim_config, the network's room for the BCI units and the somata's placement all raise here.
    mouse = make_mouse(protocol, rig)
    try:
        make_decoder(protocol, mouse.rois())  # what the pipeline node builds first on these ROIs
    except RoiError as exc:
        raise ConfigError(protocol.source_path or "<protocol>", "rois.groups", dict(protocol.rois.groups),
                          f"the groups the decoder reads ({exc})") from None


def sound_needs(protocol: Protocol) -> list[str]:
    """The protocol's settings that play sound (key = value), e.g. ``feedback.kind = 'tone'``; [] if none."""
    import dataclasses

    from bcirig.messages import Sound

    needs = [f"feedback.kind = '{protocol.feedback.kind}'"] if protocol.feedback.kind == FeedbackKind.TONE else []
    for f in dataclasses.fields(protocol.outcomes):
        outcome = getattr(protocol.outcomes, f.name)
        if not getattr(outcome, "enabled", True):
            continue
        sound = getattr(outcome, "sound", Sound.NONE)
        if sound != Sound.NONE:
            needs.append(f"outcomes.{f.name}.sound = '{sound}'")
        if getattr(outcome, "noise_at_iti_frame", -1) > 0:
            needs.append(f"outcomes.{f.name}.noise_at_iti_frame = {outcome.noise_at_iti_frame}")
    return needs


def _check_sound(protocol: Protocol, rig: Rig) -> None:
    """A protocol that plays sound needs an audio output on the rig, one that exists and plays its tones."""
    needs = sound_needs(protocol)
    if not needs:
        return
    file, cfg = rig.source_path or "<rig>", rig.sound
    why = f"protocol {protocol.protocol.name!r} plays sound ({', '.join(needs)})"
    if cfg.kind == SoundKind.NONE:
        raise ConfigError(file, "sound.kind", cfg.kind,
                          f"'sounddevice' (a sound card) or 'buffer' (no speaker: samples rendered only): {why}")
    if protocol.feedback.kind == FeedbackKind.TONE and protocol.feedback.tone_max_hz >= cfg.sample_rate / 2:
        raise ConfigError(file, "sound.sample_rate", cfg.sample_rate,
                          f"more than twice feedback.tone_max_hz ({protocol.feedback.tone_max_hz:.0f} Hz)")
    if cfg.kind == SoundKind.SOUNDDEVICE:
        from bcirig.gui.audio_out import AudioDeviceError, find_output_device

        try:
            find_output_device(cfg.device)
        except AudioDeviceError as exc:
            raise ConfigError(file, "sound.device", cfg.device, f"an audio output device with output channels: "
                                                                 f"{exc} ({why})") from None
