"""Protocol files (what the experiment is) and rig files (what this rig is), validated before anything runs.

Both are TOML. :func:`load_protocol` and :func:`load_rig` return frozen dataclasses or raise
:class:`~bcirig.schema.ConfigError` with one line naming the file, key path, value and expectation.
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcirig.decoder_params import check_decoder_table
from bcirig.messages import Screen, Sound
from bcirig.schema import MISSING, ConfigError, build, spec

__all__ = ["ConfigError", "Protocol", "Rig", "load_config", "load_protocol", "load_rig", "parse_protocol", "parse_rig"]


# --------------------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class ProtocolInfo:
    """Identity of the experiment."""

    name: str = spec(doc="short name, used in file names")
    description: str = spec("", doc="one paragraph for humans")
    seed: int = spec(0, min=0, doc="seeds every random choice the task makes (calibration resampling)")


@dataclass(frozen=True)
class Imaging:
    """Frames as the microscope (or simulator) delivers them."""

    frame_rate_hz: float = spec(30.0, min=0.1, max=20000.0, doc="per plane")
    planes: int = spec(1, min=1, max=8)
    bci_plane: int = spec(0, min=0, max=7, doc="0-based plane whose somata drive the BCI")
    height: int = spec(512, min=8, max=4096)
    width: int = spec(512, min=8, max=4096)
    dtype: str = spec("uint16", choices=("uint8", "uint16", "uint32", "int16"), doc="int16: ScanImage's native type")


@dataclass(frozen=True)
class Registration:
    """Rigid (or piecewise) motion correction against the reference image."""

    enabled: bool = spec(True)
    mode: str = spec("rigid", choices=("rigid", "piecewise"))
    upsample: int = spec(10, min=1, max=100, doc="subpixel factor of the upsampled DFT (1/upsample px)")
    max_shift_px: float = spec(20.0, min=0.0, max=512.0)
    crop: int = spec(0, min=0, max=4096, doc="side of the centred square used to register; 0 = whole frame")
    patches: int = spec(2, min=1, max=8, doc="piecewise mode: patches per side")


@dataclass(frozen=True)
class F0:
    """Baseline fluorescence rule."""

    kind: str = spec("percentile", choices=("percentile", "running_mean", "kde_mode"))
    percentile: float = spec(10.0, min=0.0, max=100.0)
    window_trials: float = spec(4.0, min=0.0, max=1000.0, doc="window = this x trial length")
    window_frames: int = spec(0, min=0, doc="explicit window; 0 = use window_trials")


@dataclass(frozen=True)
class Smoothing:
    """Smoothing of the decoder output."""

    kind: str = spec("moving_mean", choices=("moving_mean", "ema", "none"))
    frames: int = spec(3, min=1, max=10000)
    alpha: float = spec(0.5, min=0.0, max=1.0, doc="ema weight of the newest sample")


@dataclass(frozen=True)
class ReadoutConfig:
    """Frame -> readout: neuropil, F0, dF/F, decoder, smoothing."""

    signal: str = spec("dff", choices=("dff", "spike_rate"))
    neuropil_coefficient: float = spec(0.7, min=0.0, max=2.0)
    neuropil_inner_px: float = spec(2.0, min=0.0, max=100.0)
    neuropil_outer_px: float = spec(12.0, min=1.0, max=500.0)
    f0: F0 = spec(F0)
    smoothing: Smoothing = spec(Smoothing)
    decoder: dict[str, Any] = spec({"name": "two_population"}, doc="name = registered decoder, + its params")


@dataclass(frozen=True)
class Rois:
    """How many ROIs of each group a generated ROI set (simulated mouse) assigns."""

    groups: dict[str, Any] = spec({"P+": 4, "P-": 4}, doc="group name -> number of somata")
    dendrites: bool = spec(False, doc="also make dendrite ROIs on the plane above (recorded, not decoded)")


@dataclass(frozen=True)
class Baseline:
    """Open-loop baseline recorded before calibration."""

    frames: int = spec(12000, min=1)
    screen: Screen = spec(Screen.GREY)


@dataclass(frozen=True)
class Calibration:
    """Threshold from resampled baseline windows (Francioni 2026)."""

    windows: int = spec(200, min=1, max=100000)
    target_hit_fraction: float = spec(0.5, min=0.0, max=1.0)
    across_days: str = spec("stricter", choices=("stricter", "today", "pooled", "margin"),
                            doc="day 2 on: stricter = the stricter of today's and yesterday's threshold in noise "
                                "units (the study's rule); today = today's alone; pooled = the mean of the last "
                                "pool_days days' own thresholds in noise units, never lower than yesterday's by "
                                "more than that mean's noise; margin = today's, never lower than yesterday's by "
                                "more than twice its noise (bcirig.control.calibration)")
    pool_days: int = spec(5, min=1, max=60, doc="days looked back, today's included: 'pooled' averages their own "
                                                "thresholds, 'margin' widens its margin to their spread")
    fixed_threshold: float | None = spec(None, min=0.0, max=1e6,
                                         doc="a threshold given, not calibrated (readout units above the baseline "
                                             "minimum; e.g. `bcirig replay --set`); absent = calibrate")


@dataclass(frozen=True)
class Trials:
    """Closed-loop trials."""

    count: int = spec(50, min=1, max=100000)
    length_frames: int = spec(870, min=2)
    grey_frames: int = spec(15, min=0, doc="grey screen at trial start; readout not evaluated")


@dataclass(frozen=True)
class FeedbackConfig:
    """Readout -> what the mouse perceives."""

    kind: str = spec("grating", choices=("grating", "tone"))
    target_deg: float = spec(90.0, min=-360.0, max=360.0)
    steps: int = spec(7, min=2, max=100)
    step_deg: float = spec(15.0, min=0.0, max=180.0)
    tone_min_hz: float = spec(6000.0, min=20.0, max=40000.0)
    tone_max_hz: float = spec(20000.0, min=20.0, max=40000.0)
    # The grating as drawn (bcirig.gui.gl_display); the orientation comes from each frame's feedback.
    spatial_freq_cpd: float = spec(0.04, min=0.001, max=2.0,
                                   doc="grating spatial frequency, cycles per degree of visual angle at the screen "
                                       "centre (the rig's display.width_cm and distance_cm turn it into pixels)")
    temporal_freq_hz: float = spec(2.0, min=0.0, max=30.0, doc="drift: cycles per second along the grating's normal")
    contrast: float = spec(1.0, min=0.0, max=1.0, doc="Michelson contrast around the grey screen's luminance")
    tone_level_dbfs: float = spec(-12.0, min=-60.0, max=0.0, doc="tone feedback amplitude, dB re full scale")
    noise_ms: float = spec(500.0, min=1.0, max=10000.0, doc="white-noise burst length (outcome cues)")
    noise_level_dbfs: float = spec(-12.0, min=-60.0, max=0.0, doc="white-noise burst RMS level, dB re full scale")


@dataclass(frozen=True)
class HitOutcome:
    """Readout >= threshold."""

    hold_frames: int = spec(60, min=1)
    reward_on_hold_frame: int = spec(3, min=1, doc="1-based frame of the hold on which reward is given")
    iti_frames: int = spec(15, min=0)
    iti_screen: Screen = spec(Screen.GREY)


@dataclass(frozen=True)
class AbortOutcome:
    """Readout below the baseline minimum."""

    enabled: bool = spec(True)
    hold_frames: int = spec(60, min=1)
    angle_deg: float = spec(0.0, min=-360.0, max=360.0)
    sound: Sound = spec(Sound.WHITE_NOISE)
    iti_frames: int = spec(15, min=0)
    iti_screen: Screen = spec(Screen.GREY)


@dataclass(frozen=True)
class TimeoutOutcome:
    """The trial reached its length."""

    iti_frames: int = spec(90, min=0)
    iti_screen: Screen = spec(Screen.BLACK)
    noise_at_iti_frame: int = spec(30, min=-1, doc="1-based ITI frame that plays white noise; -1 = none")


@dataclass(frozen=True)
class Outcomes:
    """The three ways a trial ends."""

    hit: HitOutcome = spec(HitOutcome)
    abort: AbortOutcome = spec(AbortOutcome)
    timeout: TimeoutOutcome = spec(TimeoutOutcome)


@dataclass(frozen=True)
class Reward:
    """What a hit earns."""

    volume_ul: float = spec(4.0, min=0.0, max=50.0)
    opto: str = spec("none", choices=("none", "with_reward", "instead_of_reward"))
    opto_ms: float = spec(0.0, min=0.0, max=10000.0)


@dataclass(frozen=True)
class Safety:
    """What the task does when its input stops."""

    frame_timeout_ms: float = spec(1000.0, min=10.0, max=60000.0, doc="no frame this long: grey, no reward")


@dataclass(frozen=True)
class SetupConfig:
    """The set-up phase before the baseline: the reference image and the ROIs, from live frames."""

    frames: int = spec(300, min=2, max=100000, doc="live frames registered and averaged into the reference")
    rois: str = spec("detect", choices=("detect", "file", "imagej", "suite2p", "truth"),
                     doc="day 1: detect (candidates on the mean and correlation images), file (bcirig ROI file), "
                         "imagej (.roi/.zip), suite2p (its plane folder), truth (simulated rigs: true footprints)")
    roi_file: str = spec("", doc="file, imagej: the ROI file; suite2p: the folder with stat.npy; relative to "
                                 "the protocol file's folder")
    allow_pickle: bool = spec(False, doc="suite2p: its .npy files are pickled Python objects; load only if trusted")
    choose: dict[str, Any] = spec({}, doc="group -> indices of the candidates (detect, best first) or of the "
                                          "file's ROIs, e.g. { \"P+\" = [0, 2, 4, 6], \"P-\" = [1, 3, 5, 7] }")
    cell_radius_px: float = spec(0.0, min=0.0, max=100.0, doc="detect: soma radius; 0 = from the frame size")
    later_days: str = spec("previous", choices=("previous", "same"),
                           doc="day 2 on: the previous day's ROIs moved by the field's offset, or the day-1 method")
    min_alignment_quality: float = spec(0.5, min=-1.0, max=1.0,
                                        doc="day 2 on: a field matching the previous day's worse than this stops")
    max_alignment_px: float = spec(60.0, min=1.0, max=1000.0, doc="day 2 on: largest field offset searched")


@dataclass(frozen=True)
class Recording:
    """What the session file keeps."""

    frames: bool = spec(True, doc="store raw frames (needed for replay from pixels)")
    flush_interval_s: float = spec(0.5, min=0.05, max=1.0)


@dataclass(frozen=True)
class Protocol:
    """A whole experiment definition (one protocols/*.toml file)."""

    protocol: ProtocolInfo
    imaging: Imaging = spec(Imaging)
    registration: Registration = spec(Registration)
    readout: ReadoutConfig = spec(ReadoutConfig)
    rois: Rois = spec(Rois)
    baseline: Baseline = spec(Baseline)
    calibration: Calibration = spec(Calibration)
    trials: Trials = spec(Trials)
    feedback: FeedbackConfig = spec(FeedbackConfig)
    outcomes: Outcomes = spec(Outcomes)
    reward: Reward = spec(Reward)
    safety: Safety = spec(Safety)
    setup: SetupConfig = spec(SetupConfig)
    recording: Recording = spec(Recording)
    simulation: dict[str, Any] = spec({}, doc="simulated-mouse parameters; validated by bcirig.sim")
    source_text: str = spec("", doc="(filled in by the loader) the file's text, stored with the session")
    source_path: str = spec("", doc="(filled in by the loader)")

    @property
    def f0_window_frames(self) -> int:
        """Length of the F0 window in frames."""
        f0 = self.readout.f0
        return f0.window_frames or max(1, round(f0.window_trials * self.trials.length_frames))


# -------------------------------------------------------------------------------------------------- rig
@dataclass(frozen=True)
class RigInfo:
    """Identity of the rig."""

    name: str = spec(doc="rig name, stored with every session")
    data_dir: str = spec("data", doc="sessions go to <data_dir>/<subject>/<date>_<n>/session.h5")


@dataclass(frozen=True)
class NetworkSourceConfig:
    """The bcirig frame protocol (bcirig/acquisition/PROTOCOL.md) from a sender on the acquisition PC."""

    framing: str = spec("zmq", choices=("zmq", "tcp"),
                        doc="zmq: ZeroMQ PULL (Python senders, `bcirig send`); tcp: plain TCP stream (MATLAB, LabVIEW)")
    bind: str = spec("127.0.0.1", doc="interface to listen on; off loopback: keys (zmq) or allow_network (tcp)")
    port: int = spec(5600, min=1024, max=65535)
    secret_key: str = spec("", doc="zmq off loopback: this rig's CurveZMQ secret key file (`bcirig keys`)")
    allowed_keys: tuple[str, ...] = spec((), doc="zmq off loopback: public key files of the senders allowed in")
    allow_network: bool = spec(False, doc="tcp off loopback: the plain framing has no authentication; say so")


@dataclass(frozen=True)
class ClooseSourceConfig:
    """CLOOSE's raw stream: headerless frames of lines x pixels, uint8/16/32 (the protocol's imaging)."""

    role: str = spec("client", choices=("client", "server"),
                     doc="client: connect to the acquisition PC's server, as CLOOSE does; server: listen")
    host: str = spec("127.0.0.1", doc="client: the acquisition PC; server: the interface to listen on")
    port: int = spec(3000, min=1, max=65535)
    element_order: str = spec("column_major", choices=("column_major", "row_major"),
                              doc="column_major: MATLAB's order (CLOOSE's test senders); row_major: line-contiguous")
    byte_order: str = spec("big", choices=("big", "little"),
                           doc="MATLAB's tcpip writes big-endian; CLOOSE's Python sender little-endian")
    invert: bool = spec(False, doc="intensity inversion (Scanbox stores data inverted)")
    reconnect_s: float = spec(0.5, min=0.01, max=60.0, doc="client: wait between connection attempts")


@dataclass(frozen=True)
class TiffSourceConfig:
    """A directory an acquisition program writes TIFF stacks into (ScanImage, PrairieView, ThorImage)."""

    directory: str = spec("", doc="folder to follow; relative paths are from the rig file's folder")
    pattern: str = spec("*.tif", doc="file-name pattern (fnmatch); files are read in name order")
    poll_ms: float = spec(10.0, min=1.0, max=5000.0, doc="how often the folder is looked at")
    from_start: bool = spec(False, doc="also stream frames already in the folder when the session starts")


@dataclass(frozen=True)
class CustomSourceConfig:
    """A lab's own FrameSource class, imported by name."""

    class_path: str = spec("", doc="'package.module:ClassName'; called as Class(protocol, rig, options)")
    options: dict[str, Any] = spec({}, doc="passed to the class")


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from (bcirig.acquisition)."""

    kind: str = spec("simulated", choices=("simulated", "network", "cloose", "tiff", "custom"))
    seed: int = spec(1, min=0, doc="simulated: the mouse's seed")
    network: NetworkSourceConfig = spec(NetworkSourceConfig)
    cloose: ClooseSourceConfig = spec(ClooseSourceConfig)
    tiff: TiffSourceConfig = spec(TiffSourceConfig)
    custom: CustomSourceConfig = spec(CustomSourceConfig)


@dataclass(frozen=True)
class ValveConfig:
    """The reward valve controller."""

    kind: str = spec("simulated", choices=("simulated", "serial", "emulated"))
    port: str = spec("", doc="serial device for kind = 'serial', e.g. /dev/ttyACM0")
    baud: int = spec(115200, choices=(9600, 19200, 38400, 57600, 115200))
    ms_per_ul: float = spec(25.0, min=0.01, max=1000.0, doc="valve calibration")
    max_open_ms: int = spec(500, min=1, max=10000)
    min_interval_ms: int = spec(200, min=0, max=60000)
    watchdog_ms: int = spec(2000, min=100, max=60000)
    emulator_dir: str = spec("", doc="kind = 'emulated': folder holding valve-emu and valve.elf (`make firmware`); "
                                     "relative to the rig file; '' = $BCIRIG_VALVE_BUILD or the source checkout's")


class PatchCorner(enum.StrEnum):
    """Where the photodiode patch sits on the mouse's screen."""

    NONE = "none"
    TOP_LEFT = "top_left"
    TOP_RIGHT = "top_right"
    BOTTOM_LEFT = "bottom_left"
    BOTTOM_RIGHT = "bottom_right"


@dataclass(frozen=True)
class DisplayConfig:
    """The mouse's screen."""

    kind: str = spec("none", choices=("none", "qt"))
    screen: int = spec(0, min=0, max=16)
    width_cm: float = spec(52.0, min=1.0, max=1000.0, doc="visible width of the mouse's screen (a 24-inch 16:9 "
                                                          "monitor: 52 cm); with distance_cm, pixels per degree")
    distance_cm: float = spec(20.0, min=1.0, max=1000.0, doc="eye to screen centre, perpendicular")
    patch_corner: PatchCorner = spec(PatchCorner.BOTTOM_LEFT,
                                     doc="the photodiode patch's corner (bcirig.gui.photodiode); none = no patch")
    patch_px: int = spec(40, min=4, max=1000, doc="the photodiode patch's side, pixels")
    swap_interval: int = spec(1, min=0, max=4, doc="OpenGL buffer swaps per display refresh: 1 = synchronised "
                                                   "to the refresh where the platform allows, 0 = unsynchronised")


class SoundKind(enum.StrEnum):
    """The mouse's speaker: none, a sound card, or rendered to a buffer."""

    NONE = "none"
    SOUNDDEVICE = "sounddevice"
    BUFFER = "buffer"


@dataclass(frozen=True)
class SoundConfig:
    """The mouse's speaker (bcirig.nodes.sound; the samples from bcirig.gui.audio)."""

    kind: SoundKind = spec(SoundKind.NONE,
                           doc="none = no audio output (a protocol that needs sound is refused); sounddevice = a "
                               "sound card through PortAudio; buffer = the same samples rendered to a buffer or "
                               "file (simulated rigs, headless)")
    device: str = spec("", doc="sounddevice: the output device's name (or part of it) or index; '' = the default")
    sample_rate: int = spec(96000, min=8000, max=384000, doc="Hz; above twice the highest tone (20 kHz)")
    latency: float = spec(0.01, min=0.0, max=1.0, doc="sounddevice: requested output latency, seconds")
    block: int = spec(256, min=16, max=65536, doc="sounddevice: samples per output block (the callback's)")
    file: str = spec("", doc="buffer: a 16-bit WAV file in the session folder the samples are written to "
                             "(e.g. 'sound.wav'); '' = rendered, not kept")


@dataclass(frozen=True)
class BusConfig:
    """Endpoints. ipc:// on one machine; tcp:// binds to loopback unless host says otherwise."""

    transport: str = spec("ipc", choices=("ipc", "tcp"))
    host: str = spec("127.0.0.1")
    base_port: int = spec(5550, min=1024, max=65000)


@dataclass(frozen=True)
class LickportConfig:
    """The motorised lickport: a Zaber linear stage on its ASCII serial protocol (bcirig.devices.lickport)."""

    kind: str = spec("none", choices=("none", "serial", "simulated"),
                     doc="none = no lickport; serial = a Zaber stage on `port`; simulated = its in-process twin")
    port: str = spec("", doc="serial device for kind = 'serial', e.g. /dev/ttyUSB0")
    baud: int = spec(115200, choices=(9600, 19200, 38400, 57600, 115200), doc="Zaber ASCII default: 115200")
    device: int = spec(1, min=1, max=99, doc="the stage's device address on the daisy chain")
    axis: int = spec(1, min=1, max=9)
    um_per_microstep: float = spec(0.047625, min=1e-4, max=1000.0,
                                   doc="the stage model's microstep size (0.047625 µm for many X-LSM stages)")
    min_mm: float = spec(0.0, min=0.0, max=1000.0, doc="nearest travel to home (0 = the home sensor)")
    max_mm: float = spec(10.0, min=0.0, max=1000.0, doc="furthest travel toward the mouse; must exceed min_mm")
    max_speed_mm_s: float = spec(5.0, min=0.001, max=1000.0, doc="top speed, written to the stage's maxspeed")


@dataclass(frozen=True)
class Rig:
    """A whole rig definition (one hardware/rigs/*.toml file)."""

    rig: RigInfo
    source: SourceConfig = spec(SourceConfig)
    valve: ValveConfig = spec(ValveConfig)
    display: DisplayConfig = spec(DisplayConfig)
    sound: SoundConfig = spec(SoundConfig)
    lickport: LickportConfig = spec(LickportConfig)
    bus: BusConfig = spec(BusConfig)
    source_text: str = spec("")
    source_path: str = spec("")


# ---------------------------------------------------------------------------------------------- loading
def _read_toml(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(file)", "(unparsable)", f"valid TOML: {exc}") from None


def _check_protocol(p: Protocol, file: str) -> None:
    """Cross-field rules the per-field limits cannot express."""
    if p.imaging.bci_plane >= p.imaging.planes:
        raise ConfigError(file, "imaging.bci_plane", p.imaging.bci_plane, f"< imaging.planes ({p.imaging.planes})")
    hit = p.outcomes.hit
    if hit.reward_on_hold_frame > hit.hold_frames:
        raise ConfigError(
            file, "outcomes.hit.reward_on_hold_frame", hit.reward_on_hold_frame,
            f"<= outcomes.hit.hold_frames ({hit.hold_frames})",
        )
    if p.trials.grey_frames >= p.trials.length_frames:
        raise ConfigError(
            file, "trials.grey_frames", p.trials.grey_frames, f"< trials.length_frames ({p.trials.length_frames})"
        )
    if p.baseline.frames < p.trials.length_frames:
        raise ConfigError(
            file, "baseline.frames", p.baseline.frames,
            f">= trials.length_frames ({p.trials.length_frames}): calibration resamples trial-length windows",
        )
    if p.feedback.tone_max_hz <= p.feedback.tone_min_hz:
        raise ConfigError(file, "feedback.tone_max_hz", p.feedback.tone_max_hz, "> feedback.tone_min_hz")
    for group, count in p.rois.groups.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(file, f"rois.groups.{group}", count, "a whole number of ROIs >= 0")
    decoder = p.readout.decoder
    if not isinstance(decoder.get("name"), str):
        raise ConfigError(file, "readout.decoder.name", decoder.get("name"), "the name of a registered decoder")
    check_decoder_table(decoder, p.readout.signal, file)


def parse_protocol(text: str, file: str = "<protocol>") -> Protocol:
    """Validate protocol TOML text; raises ConfigError naming ``file``."""
    return _protocol_from_table(_read_toml(text, file), text, file)


def _protocol_from_table(table: dict[str, Any], text: str, file: str) -> Protocol:
    _require_table(table, "protocol", file)
    proto = build(Protocol, table, file)
    _check_protocol(proto, file)
    return _replace_source(proto, text, file)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_source(src: SourceConfig, file: str) -> None:
    """The chosen source's own table must be complete; nothing listens off loopback unprotected."""
    net = src.network
    if src.kind == "network" and net.bind not in LOOPBACK:
        if net.framing == "zmq" and not (net.secret_key and net.allowed_keys):
            raise ConfigError(file, "source.network.secret_key", net.secret_key,
                              f"a CurveZMQ secret key file and source.network.allowed_keys when binding to "
                              f"{net.bind!r} (not loopback); make keys with `bcirig keys NAME`")
        if net.framing == "tcp" and not net.allow_network:
            raise ConfigError(file, "source.network.allow_network", net.allow_network,
                              f"true to listen with the unauthenticated plain-TCP framing on {net.bind!r} "
                              "(not loopback); prefer framing = 'zmq' with keys")
    if src.kind == "tiff" and not src.tiff.directory:
        raise ConfigError(file, "source.tiff.directory", src.tiff.directory, "the folder the microscope writes")
    if src.kind == "custom" and ":" not in src.custom.class_path:
        raise ConfigError(file, "source.custom.class_path", src.custom.class_path, "'package.module:ClassName'")


def parse_rig(text: str, file: str = "<rig>") -> Rig:
    """Validate rig TOML text; raises ConfigError naming ``file``."""
    return _rig_from_table(_read_toml(text, file), text, file)


def _rig_from_table(table: dict[str, Any], text: str, file: str) -> Rig:
    _require_table(table, "rig", file)
    rig = build(Rig, table, file)
    if rig.valve.kind == "serial" and not rig.valve.port:
        raise ConfigError(file, "valve.port", rig.valve.port, "a serial device path when valve.kind = 'serial'")
    _check_source(rig.source, file)
    if rig.valve.emulator_dir and not Path(rig.valve.emulator_dir).is_absolute() and Path(file).is_file():
        import dataclasses

        here = Path(file).resolve().parent
        rig = dataclasses.replace(rig, valve=dataclasses.replace(rig.valve,
                                                                 emulator_dir=str(here / rig.valve.emulator_dir)))
    if rig.bus.transport == "tcp" and rig.bus.host not in LOOPBACK:
        raise ConfigError(
            file, "bus.host", rig.bus.host,
            "a loopback address (binding to a network address needs CurveZMQ keys, not supported yet)",
        )
    return _replace_source(rig, text, file)


def _replace_source(obj: Any, text: str, file: str) -> Any:
    import dataclasses

    return dataclasses.replace(obj, source_text=text, source_path=file)


def _read_file(path: str | Path, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), "(file)", str(path), f"an existing {what} file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", str(path), f"a readable {what} file ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # an image, an HDF5 file, a word-processor document ...
        raise ConfigError(
            str(path), "(file)", "(binary)",
            f"a {what} file in TOML, but this is not a text file (UTF-8): byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}",
        ) from None


# Tables only a rig file has: they name a rig file that lacks its [rig] table.
_RIG_ONLY = ("source", "valve", "display", "sound", "bus")


def _require_table(table: dict[str, Any], kind: str, file: str) -> None:
    """A protocol file must have [protocol] and a rig file [rig]; say which file it looks like instead."""
    if kind in table:
        return
    if kind == "protocol":
        hint = ("; this is a rig file (it has [rig]): give it as the rig (--rig)" if "rig" in table
                else " naming the experiment (name = ...)")
    else:
        rig_tables = [f"[{t}]" for t in _RIG_ONLY if t in table]
        hint = ("; this is a protocol file (it has [protocol])" if "protocol" in table
                else " naming the rig (name = ...)" + (f"; the file has {', '.join(rig_tables)}" if rig_tables else ""))
    raise ConfigError(file, kind, MISSING, f"a [{kind}] table{hint}")


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file."""
    return parse_protocol(_read_file(path, "protocol"), str(path))


def load_rig(path: str | Path) -> Rig:
    """Read and validate a rig file (read as a rig whatever it contains: a missing [rig] is named)."""
    return parse_rig(_read_file(path, "rig"), str(path))


def load_config(path: str | Path) -> Protocol | Rig:
    """Read and validate a file that may be either: [protocol] makes it a protocol, [rig] a rig.

    A file with neither or both raises ConfigError naming what it lacks (or has twice).
    """
    file = str(path)
    text = _read_file(path, "protocol or rig")
    table = _read_toml(text, file)
    has_protocol, has_rig = "protocol" in table, "rig" in table
    if has_protocol and has_rig:
        raise ConfigError(file, "(file)", "[protocol] and [rig]",
                          "one of them: a protocol file has a [protocol] table, a rig file a [rig] table")
    if has_rig:
        return _rig_from_table(table, text, file)
    if has_protocol:
        return _protocol_from_table(table, text, file)
    rig_tables = [f"[{t}]" for t in _RIG_ONLY if t in table]
    looks = (f"; it has {', '.join(rig_tables)}, so it looks like a rig file lacking its [rig] table"
             if rig_tables else "")
    raise ConfigError(file, "(file)", "(no [protocol] or [rig] table)",
                      f"a [protocol] table (a protocol file) or a [rig] table (a rig file){looks}")
