"""Protocol files (what the experiment is) and rig files (what this rig is), validated before anything runs.

Both are TOML. :func:`load_protocol` and :func:`load_rig` return frozen dataclasses or raise
:class:`~bcirig.schema.ConfigError` with one line naming the file, key path, value and expectation.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bcirig.decoder_params import ReadoutSignal, check_decoder_table
from bcirig.messages import Outcome, Phase, Screen, Sound
from bcirig.schema import MISSING, ConfigError, build, spec

__all__ = ["ConfigError", "Protocol", "Rig", "load_config", "load_protocol", "load_rig", "parse_protocol", "parse_rig"]


# --------------------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class ProtocolInfo:
    """Identity of the experiment."""

    name: str = spec(doc="short name, used in file names")
    description: str = spec("", doc="one paragraph for humans")
    seed: int = spec(0, min=0, doc="seeds every random choice the task makes (calibration resampling)")


class PixelType(enum.StrEnum):
    """The microscope's pixel type (a NumPy dtype name)."""

    UINT8 = "uint8"
    UINT16 = "uint16"
    UINT32 = "uint32"
    INT16 = "int16"


@dataclass(frozen=True)
class Imaging:
    """Frames as the microscope (or simulator) delivers them."""

    frame_rate_hz: float = spec(30.0, min=0.1, max=20000.0, doc="per plane")
    planes: int = spec(1, min=1, max=8)
    bci_plane: int = spec(0, min=0, max=7, doc="0-based plane whose somata drive the BCI")
    height: int = spec(512, min=8, max=4096)
    width: int = spec(512, min=8, max=4096)
    dtype: PixelType = spec(PixelType.UINT16, doc="int16: ScanImage's native type")


class RegistrationMode(enum.StrEnum):
    """One shift for the whole frame, or one per patch."""

    RIGID = "rigid"
    PIECEWISE = "piecewise"


@dataclass(frozen=True)
class Registration:
    """Rigid (or piecewise) motion correction against the reference image."""

    enabled: bool = spec(True)
    mode: RegistrationMode = spec(RegistrationMode.RIGID)
    upsample: int = spec(10, min=1, max=100, doc="subpixel factor of the upsampled DFT (1/upsample px)")
    max_shift_px: float = spec(20.0, min=0.0, max=512.0)
    crop: int = spec(0, min=0, max=4096, doc="side of the centred square used to register; 0 = whole frame")
    patches: int = spec(2, min=1, max=8, doc="piecewise mode: patches per side")


class F0Kind(enum.StrEnum):
    """The baseline-fluorescence rules (bcirig.processing.f0)."""

    PERCENTILE = "percentile"
    RUNNING_MEAN = "running_mean"
    KDE_MODE = "kde_mode"


@dataclass(frozen=True)
class F0:
    """Baseline fluorescence rule."""

    kind: F0Kind = spec(F0Kind.PERCENTILE)
    percentile: float = spec(10.0, min=0.0, max=100.0)
    window_trials: float = spec(4.0, min=0.0, max=1000.0, doc="window = this x trial length")
    window_frames: int = spec(0, min=0, doc="explicit window; 0 = use window_trials")


class SmoothingKind(enum.StrEnum):
    """The smoothers of the decoder output (bcirig.processing.smoothing)."""

    MOVING_MEAN = "moving_mean"
    EMA = "ema"
    NONE = "none"


@dataclass(frozen=True)
class Smoothing:
    """Smoothing of the decoder output."""

    kind: SmoothingKind = spec(SmoothingKind.MOVING_MEAN)
    frames: int = spec(3, min=1, max=10000)
    alpha: float = spec(0.5, min=0.0, max=1.0, doc="ema weight of the newest sample")


@dataclass(frozen=True)
class ReadoutConfig:
    """Frame -> readout: neuropil, F0, dF/F, decoder, smoothing."""

    signal: ReadoutSignal = spec(ReadoutSignal.DFF)
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


class AcrossDays(enum.StrEnum):
    """How day 2 on combines today's threshold with earlier days' (bcirig.control.calibration)."""

    STRICTER = "stricter"
    TODAY = "today"
    POOLED = "pooled"
    MARGIN = "margin"


class CalibrationRule(enum.StrEnum):
    """How today's threshold is found from the baseline (registered in bcirig.control.calibration.RULES)."""

    RESAMPLED_FRACTION = "resampled_fraction"  # Francioni 2026 / CLOOSE: at most a fraction of trial windows reach it
    TARGET_RATE = "target_rate"  # Carmena lab: the baseline would have earned target_hits_per_min hits
    FIXED = "fixed"  # the rig operator's number (fixed_threshold)


@dataclass(frozen=True)
class Calibration:
    """The hit threshold, from the baseline by a registered rule, and across days."""

    rule: CalibrationRule = spec(CalibrationRule.RESAMPLED_FRACTION,
                                 doc="resampled_fraction (Francioni 2026), target_rate (a baseline hit rate, "
                                     "Vendrell-Llopis 2022) or fixed (fixed_threshold)")
    windows: int = spec(200, min=1, max=100000, doc="trial-length windows resampled from the baseline (every rule "
                                                    "draws them: their hit fraction is the calibrated chance)")
    target_hit_fraction: float = spec(0.5, min=0.0, max=1.0, doc="resampled_fraction: at most this fraction of "
                                                                 "windows reach the threshold")
    target_hits_per_min: float = spec(0.6, min=0.001, max=600.0,
                                      doc="target_rate: hits per minute the baseline readout would have earned "
                                          "under the trial rules (refractory, hold, ITI); 0.5-0.8 = one per 75-120 s")
    across_days: AcrossDays = spec(
        AcrossDays.STRICTER,
        doc="day 2 on: stricter = the stricter of today's and yesterday's threshold in noise units (the study's "
            "rule); today = today's alone; pooled = the mean of the last pool_days days' own thresholds in noise "
            "units, never lower than yesterday's by more than that mean's noise; margin = today's, never lower than "
            "yesterday's by more than twice its noise (bcirig.control.calibration)")
    pool_days: int = spec(5, min=1, max=60, doc="days looked back, today's included: 'pooled' averages their own "
                                                "thresholds, 'margin' widens its margin to their spread")
    fixed_threshold: float | None = spec(None, min=0.0, max=1e6,
                                         doc="rule = 'fixed': the threshold (readout units above the baseline "
                                             "minimum). Given with another rule it overrides that rule's result "
                                             "(what-if replay: `bcirig replay --set calibration.fixed_threshold=X`)")


@dataclass(frozen=True)
class Trials:
    """Closed-loop trials."""

    count: int = spec(50, min=1, max=100000)
    length_frames: int = spec(870, min=2)
    grey_frames: int = spec(15, min=0, doc="grey screen at trial start; readout not evaluated")
    refractory_fraction: float = spec(0.0, min=0.0, max=1.0,
                                      doc="after a hit, the next hit counts only once the readout has stayed below "
                                          "this fraction of the threshold for refractory_frames frames (Vendrell-"
                                          "Llopis 2022: 0.5 for 2 frames); 0 = no refractory rule")
    refractory_frames: int = spec(0, min=0, max=100000)
    start_below_fraction: float = spec(0.0, min=0.0, max=1.0,
                                       doc="low-activity check (Daie): after the grey frames a trial becomes active "
                                           "only once the readout has stayed below this fraction of the threshold "
                                           "for start_below_frames frames; 0 = no check")
    start_below_frames: int = spec(0, min=0, max=100000)
    catch_fraction: float = spec(0.0, min=0.0, max=1.0,
                                 doc="fraction of trials (drawn with the protocol's seed) run without feedback: "
                                     "grey screen, no tone, lickport still; outcomes are evaluated as usual")
    catch_reward: bool = spec(False, doc="does a hit on a catch trial earn its reward")


class FeedbackKind(enum.StrEnum):
    """What the readout becomes: a grating's orientation or a tone's pitch."""

    GRATING = "grating"
    TONE = "tone"
    LICKPORT = "lickport"  # a motorised lickport moving toward the mouse at a speed set by the readout (Daie)


@dataclass(frozen=True)
class FeedbackConfig:
    """Readout -> what the mouse perceives."""

    kind: FeedbackKind = spec(FeedbackKind.GRATING)
    target_deg: float = spec(90.0, min=-360.0, max=360.0)
    steps: int = spec(7, min=2, max=100)
    step_deg: float = spec(15.0, min=0.0, max=180.0)
    tone_min_hz: float = spec(6000.0, min=20.0, max=40000.0)
    tone_max_hz: float = spec(20000.0, min=20.0, max=40000.0)
    tone_bins: int = spec(0, min=0, max=1000,
                          doc="tone pitch in this many steps (Clancy 2014 used bins); 0 = continuous")
    lickport_travel_mm: float = spec(7.0, min=0.1, max=100.0,
                                     doc="lickport: distance from its start to within the mouse's reach (Daie: 7 mm)")
    lickport_speed_mm_s: float = spec(1.4, min=0.001, max=100.0,
                                      doc="lickport: speed toward the mouse while the readout is at the threshold; "
                                          "proportional to the readout above the baseline minimum, never backward")
    lickport_retract_mm_s: float = spec(10.0, min=0.001, max=1000.0, doc="lickport: speed back to the start in the ITI")
    lickport_max_speed_mm_s: float = spec(7.0, min=0.001, max=1000.0,
                                          doc="lickport: the task never asks for more (at most the rig's stage "
                                              "top speed, which preflight checks); calibration's window sums "
                                              "ignore this cap, so a capped protocol's calibrated chance is an "
                                              "upper bound")
    # The grating as drawn (bcirig.gui.gl_display); the orientation comes from each frame's feedback.
    spatial_freq_cpd: float = spec(0.04, min=0.001, max=2.0,
                                   doc="grating spatial frequency, cycles per degree of visual angle at the screen "
                                       "centre (the rig's display.width_cm and distance_cm turn it into pixels)")
    temporal_freq_hz: float = spec(2.0, min=0.0, max=30.0, doc="drift: cycles per second along the grating's normal")
    contrast: float = spec(1.0, min=0.0, max=1.0, doc="Michelson contrast around the grey screen's luminance")
    tone_level_dbfs: float = spec(-12.0, min=-60.0, max=0.0, doc="tone feedback amplitude, dB re full scale")
    noise_ms: float = spec(500.0, min=1.0, max=10000.0, doc="white-noise burst length (outcome cues)")
    noise_level_dbfs: float = spec(-12.0, min=-60.0, max=0.0, doc="white-noise burst RMS level, dB re full scale")


class OutcomeWhen(enum.StrEnum):
    """The condition that ends a trial with an outcome (evaluated by bcirig.control.task on active frames)."""

    THRESHOLD = "threshold"  # readout - baseline minimum >= threshold
    BELOW_MIN = "below_baseline_min"  # readout below the baseline minimum
    LENGTH = "trial_length"  # the trial's length_frames-th frame passed
    REACHED = "lickport_reached"  # the lickport has travelled feedback.lickport_travel_mm (feedback.kind = lickport)


class HoldView(enum.StrEnum):
    """What the mouse perceives during an outcome's hold."""

    TARGET = "target"  # the grating at the target (tone at its top pitch; lickport where it is)
    ANGLE = "angle"  # the grating at the outcome's angle_deg (tone at its lowest pitch)
    GREY = "grey"
    BLACK = "black"


@dataclass(frozen=True)
class OutcomeSpec:
    """One way a trial ends, and its actions as data: hold, screen, sound, reward, ITI."""

    enabled: bool = spec(True)
    when: OutcomeWhen = spec(OutcomeWhen.THRESHOLD, doc="the condition that ends the trial with this outcome")
    hold_frames: int = spec(60, min=0, doc="frames after the outcome before the ITI (the outcome frame is hold "
                                           "frame 1); 0 = the ITI starts on the next frame")
    hold_view: HoldView = spec(HoldView.TARGET)
    angle_deg: float = spec(0.0, min=-360.0, max=360.0, doc="hold_view = 'angle': the grating's orientation")
    sound: Sound = spec(Sound.NONE, doc="cue on the outcome frame")
    reward: bool = spec(False, doc="deliver the reward (and opto per [reward]/[opto]) during the hold")
    reward_on_hold_frame: int = spec(3, min=1, doc="1-based frame of the hold on which the reward command goes out")
    iti_frames: int = spec(15, min=0)
    iti_screen: Screen = spec(Screen.GREY)
    noise_at_iti_frame: int = spec(-1, min=-1, doc="1-based ITI frame that plays white noise; -1 = none")


@dataclass(frozen=True)
class HitOutcome(OutcomeSpec):
    """Readout >= threshold (or the lickport reached): the target held, a reward on its 3rd frame."""

    reward: bool = spec(True, doc="deliver the reward (and opto per [reward]/[opto]) during the hold")


@dataclass(frozen=True)
class AbortOutcome(OutcomeSpec):
    """Readout below the baseline minimum: the grating at 0 degrees and a white-noise cue."""

    when: OutcomeWhen = spec(OutcomeWhen.BELOW_MIN, doc="the condition that ends the trial with this outcome")
    hold_view: HoldView = spec(HoldView.ANGLE)
    sound: Sound = spec(Sound.WHITE_NOISE, doc="cue on the outcome frame")


@dataclass(frozen=True)
class TimeoutOutcome(OutcomeSpec):
    """The trial reached its length: a black 90-frame ITI with white noise on its 30th frame."""

    when: OutcomeWhen = spec(OutcomeWhen.LENGTH, doc="the condition that ends the trial with this outcome")
    hold_frames: int = spec(0, min=0, doc="frames after the outcome before the ITI; 0 = the ITI starts next frame")
    iti_frames: int = spec(90, min=0)
    iti_screen: Screen = spec(Screen.BLACK)
    noise_at_iti_frame: int = spec(30, min=-1, doc="1-based ITI frame that plays white noise; -1 = none")


@dataclass(frozen=True)
class Outcomes:
    """The ways a trial ends, checked in this order on each active frame: hit, abort, timeout."""

    hit: HitOutcome = spec(HitOutcome)
    abort: AbortOutcome = spec(AbortOutcome)
    timeout: TimeoutOutcome = spec(TimeoutOutcome)

    def by_name(self) -> dict[Outcome, OutcomeSpec]:
        """Each outcome's spec, in the order the task checks them."""
        return {Outcome.HIT: self.hit, Outcome.ABORT: self.abort, Outcome.TIMEOUT: self.timeout}


class Opto(enum.StrEnum):
    """Optogenetic stimulation on a hit."""

    NONE = "none"
    WITH_REWARD = "with_reward"
    INSTEAD_OF_REWARD = "instead_of_reward"


@dataclass(frozen=True)
class Reward:
    """What a hit earns."""

    volume_ul: float = spec(4.0, min=0.0, max=50.0)
    opto: Opto = spec(Opto.NONE)
    opto_ms: float = spec(0.0, min=0.0, max=10000.0)


class OptoSchedule(enum.StrEnum):
    """Which hits carry the opto stimulation that ``[reward] opto`` describes."""

    EVERY_TRIAL = "every_trial"
    PER_TRIAL = "per_trial"  # a random fraction of trials (drawn with the protocol's seed)
    ALTERNATE_DAYS = "alternate_days"  # every hit on opto days, none on the others (Francioni, unverified)


@dataclass(frozen=True)
class OptoConfig:
    """When opto goes with (or instead of) a hit's reward; ``[reward] opto = "none"`` means never."""

    schedule: OptoSchedule = spec(OptoSchedule.EVERY_TRIAL)
    fraction: float = spec(0.5, min=0.0, max=1.0, doc="per_trial: fraction of trials with opto")
    odd_days: bool = spec(True, doc="alternate_days: opto on training days 1, 3, 5 ... (false: 2, 4, 6 ...)")


class PhaseStart(enum.StrEnum):
    """When a phase begins: as soon as the one before it ends, or on the experimenter's command."""

    AUTO = "auto"
    OPERATOR = "operator"  # the console's "start baseline" (baseline) or "start trials" (any other phase)


OPEN_PHASES = (Phase.BASELINE, Phase.SPONTANEOUS, Phase.PHOTOSTIM_MAPPING)  # frames, no trials
TRIAL_PHASES = (Phase.CLOSED_LOOP, Phase.DEGRADATION, Phase.REINSTATEMENT)  # trials
MARKER_PHASES = (Phase.ALIGNMENT, Phase.CALIBRATION)  # no frames of their own


@dataclass(frozen=True)
class PhaseSpec:
    """One entry of ``[[phases]]``: a phase of the session, in order, with its own parameters."""

    kind: Phase = spec(doc="alignment, baseline, calibration, closed_loop, degradation, reinstatement, "
                           "spontaneous, photostim_mapping")
    name: str = spec("", doc="a label for the event table (default: the kind)")
    start: PhaseStart = spec(PhaseStart.AUTO)
    frames: int = spec(0, min=0, max=10_000_000, doc="baseline, spontaneous, photostim_mapping: length in frames "
                                                      "(0 for a baseline: [baseline] frames)")
    trials: int = spec(0, min=0, max=100000, doc="closed_loop, degradation, reinstatement: trials (0: [trials] count)")
    screen: Screen | None = spec(None, doc="baseline, spontaneous, photostim_mapping: the screen (default: "
                                           "[baseline] screen for a baseline, grey otherwise)")
    stimuli: bool = spec(False, doc="baseline, spontaneous: show the feedback stimuli open loop (the grating at a "
                                    "random one of its orientations, or a tone at a random pitch), a new one every "
                                    "stimulus_frames")
    stimulus_frames: int = spec(30, min=1, max=100000)
    from_day: int = spec(1, min=1, max=10000, doc="run this phase from this training day on (Clancy 2014: the "
                                                  "contingency degradation after days of training)")


@dataclass(frozen=True)
class Safety:
    """What the task does when its input stops."""

    frame_timeout_ms: float = spec(1000.0, min=10.0, max=60000.0, doc="no frame this long: grey, no reward")


class RoiMethod(enum.StrEnum):
    """Where day 1's ROIs come from (bcirig.setup)."""

    DETECT = "detect"
    FILE = "file"
    IMAGEJ = "imagej"
    SUITE2P = "suite2p"
    TRUTH = "truth"


class LaterDays(enum.StrEnum):
    """Day 2 on: yesterday's ROIs moved, or day 1's method again."""

    PREVIOUS = "previous"
    SAME = "same"


@dataclass(frozen=True)
class SetupConfig:
    """The set-up phase before the baseline: the reference image and the ROIs, from live frames."""

    frames: int = spec(300, min=2, max=100000, doc="live frames registered and averaged into the reference")
    rois: RoiMethod = spec(RoiMethod.DETECT,
                           doc="day 1: detect (candidates on the mean and correlation images), file (bcirig ROI "
                               "file), imagej (.roi/.zip), suite2p (its plane folder), truth (simulated rigs: true "
                               "footprints)")
    roi_file: str = spec("", doc="file, imagej: the ROI file; suite2p: the folder with stat.npy; relative to "
                                 "the protocol file's folder")
    allow_pickle: bool = spec(False, doc="suite2p: its .npy files are pickled Python objects; load only if trusted")
    choose: dict[str, Any] = spec({}, doc="group -> indices of the candidates (detect, best first) or of the "
                                          "file's ROIs, e.g. { \"P+\" = [0, 2, 4, 6], \"P-\" = [1, 3, 5, 7] }")
    cell_radius_px: float = spec(0.0, min=0.0, max=100.0, doc="detect: soma radius; 0 = from the frame size")
    later_days: LaterDays = spec(LaterDays.PREVIOUS,
                                 doc="day 2 on: the previous day's ROIs moved by the field's offset, or the day-1 "
                                     "method")
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
    opto: OptoConfig = spec(OptoConfig)
    phases: tuple[PhaseSpec, ...] = spec((), doc="the session's phases in order ([[phases]] tables); none = "
                                             "baseline, calibration, closed_loop (Francioni 2026)")
    safety: Safety = spec(Safety)
    setup: SetupConfig = spec(SetupConfig)
    recording: Recording = spec(Recording)
    simulation: dict[str, Any] = spec({}, doc="simulated-mouse parameters; validated by bcirig.sim")
    source_text: str = spec("", doc="(filled in by the loader) the file's text, stored with the session")
    source_path: str = spec("", doc="(filled in by the loader)")

    def phase_plan(self, day: int | None = None) -> tuple[PhaseSpec, ...]:
        """The phases as run on training ``day`` (all listed when None), defaults filled in: [baseline] frames
        and screen, [trials] count."""
        listed = self.phases or (PhaseSpec(kind=Phase.BASELINE), PhaseSpec(kind=Phase.CALIBRATION),
                                 PhaseSpec(kind=Phase.CLOSED_LOOP))
        out = []
        for ph in listed:
            if day is not None and ph.from_day > day:
                continue
            frames, trials, screen = ph.frames, ph.trials, ph.screen
            if ph.kind is Phase.BASELINE:
                frames = frames or self.baseline.frames
                screen = screen or self.baseline.screen
            elif ph.kind in OPEN_PHASES:
                screen = screen or Screen.GREY
            if ph.kind in TRIAL_PHASES:
                trials = trials or self.trials.count
            out.append(dataclasses.replace(ph, name=ph.name or ph.kind.value, frames=frames, trials=trials,
                                           screen=screen))
        return tuple(out)

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


class Framing(enum.StrEnum):
    """The bcirig frame protocol's two framings (bcirig/acquisition/PROTOCOL.md)."""

    ZMQ = "zmq"
    TCP = "tcp"


@dataclass(frozen=True)
class NetworkSourceConfig:
    """The bcirig frame protocol (bcirig/acquisition/PROTOCOL.md) from a sender on the acquisition PC."""

    framing: Framing = spec(Framing.ZMQ,
                            doc="zmq: ZeroMQ PULL (Python senders, `bcirig send`); tcp: plain TCP stream (MATLAB, "
                                "LabVIEW)")
    bind: str = spec("127.0.0.1", doc="interface to listen on; off loopback: keys (zmq) or allow_network (tcp)")
    port: int = spec(5600, min=1024, max=65535)
    secret_key: str = spec("", doc="zmq off loopback: this rig's CurveZMQ secret key file (`bcirig keys`)")
    allowed_keys: tuple[str, ...] = spec((), doc="zmq off loopback: public key files of the senders allowed in")
    allow_network: bool = spec(False, doc="tcp off loopback: the plain framing has no authentication; say so")


class ClooseRole(enum.StrEnum):
    """Which end of CLOOSE's TCP connection the rig is."""

    CLIENT = "client"
    SERVER = "server"


class ElementOrder(enum.StrEnum):
    """The order of a raw frame's pixels on the wire."""

    COLUMN_MAJOR = "column_major"
    ROW_MAJOR = "row_major"


class ByteOrder(enum.StrEnum):
    """The byte order of a raw frame's pixels on the wire."""

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True)
class ClooseSourceConfig:
    """CLOOSE's raw stream: headerless frames of lines x pixels, uint8/16/32 (the protocol's imaging)."""

    role: ClooseRole = spec(ClooseRole.CLIENT,
                            doc="client: connect to the acquisition PC's server, as CLOOSE does; server: listen")
    host: str = spec("127.0.0.1", doc="client: the acquisition PC; server: the interface to listen on")
    port: int = spec(3000, min=1, max=65535)
    element_order: ElementOrder = spec(ElementOrder.COLUMN_MAJOR,
                                       doc="column_major: MATLAB's order (CLOOSE's test senders); row_major: "
                                           "line-contiguous")
    byte_order: ByteOrder = spec(ByteOrder.BIG,
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


class SourceKind(enum.StrEnum):
    """The frame sources (bcirig.acquisition)."""

    SIMULATED = "simulated"
    NETWORK = "network"
    CLOOSE = "cloose"
    TIFF = "tiff"
    CUSTOM = "custom"


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from (bcirig.acquisition)."""

    kind: SourceKind = spec(SourceKind.SIMULATED)
    seed: int = spec(1, min=0, doc="simulated: the mouse's seed")
    network: NetworkSourceConfig = spec(NetworkSourceConfig)
    cloose: ClooseSourceConfig = spec(ClooseSourceConfig)
    tiff: TiffSourceConfig = spec(TiffSourceConfig)
    custom: CustomSourceConfig = spec(CustomSourceConfig)


class ValveKind(enum.StrEnum):
    """The valve controller: its in-process twin, the real one, or its firmware under simavr."""

    SIMULATED = "simulated"
    SERIAL = "serial"
    EMULATED = "emulated"


# Serial speeds both controllers' firmware support; numbers, so a plain choices list rather than an enum.
BAUD_RATES = (9600, 19200, 38400, 57600, 115200)


@dataclass(frozen=True)
class ValveConfig:
    """The reward valve controller."""

    kind: ValveKind = spec(ValveKind.SIMULATED)
    port: str = spec("", doc="serial device for kind = 'serial', e.g. /dev/ttyACM0")
    baud: int = spec(115200, choices=BAUD_RATES)
    ms_per_ul: float = spec(25.0, min=0.01, max=1000.0, doc="valve calibration")
    max_open_ms: int = spec(500, min=1, max=10000)
    min_interval_ms: int = spec(200, min=0, max=60000)
    watchdog_ms: int = spec(2000, min=100, max=60000)
    emulator_dir: str = spec("", doc="kind = 'emulated': folder holding valve-emu and valve.elf (`make firmware`); "
                                     "relative to the rig file; '' = $BCIRIG_VALVE_BUILD or the source checkout's")


class DisplayKind(enum.StrEnum):
    """The mouse's screen: none, or a Qt window."""

    NONE = "none"
    QT = "qt"


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

    kind: DisplayKind = spec(DisplayKind.NONE)
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


class Transport(enum.StrEnum):
    """The bus's ZeroMQ transport."""

    IPC = "ipc"
    TCP = "tcp"


@dataclass(frozen=True)
class BusConfig:
    """Endpoints. ipc:// on one machine; tcp:// binds to loopback unless host says otherwise."""

    transport: Transport = spec(Transport.IPC)
    host: str = spec("127.0.0.1")
    base_port: int = spec(5550, min=1024, max=65000)


class LickportKind(enum.StrEnum):
    """The motorised lickport: none, a Zaber stage, or its twin."""

    NONE = "none"
    SERIAL = "serial"
    SIMULATED = "simulated"


@dataclass(frozen=True)
class LickportConfig:
    """The motorised lickport: a Zaber linear stage on its ASCII serial protocol (bcirig.devices.lickport)."""

    kind: LickportKind = spec(LickportKind.NONE,
                              doc="none = no lickport; serial = a Zaber stage on `port`; simulated = its in-process "
                                  "twin")
    port: str = spec("", doc="serial device for kind = 'serial', e.g. /dev/ttyUSB0")
    baud: int = spec(115200, choices=BAUD_RATES, doc="Zaber ASCII default: 115200")
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


def _check_outcomes(p: Protocol, file: str) -> None:
    for name, o in p.outcomes.by_name().items():
        key = f"outcomes.{name.value}"
        if o.reward and o.reward_on_hold_frame > o.hold_frames:
            raise ConfigError(file, f"{key}.reward_on_hold_frame", o.reward_on_hold_frame,
                              f"<= {key}.hold_frames ({o.hold_frames}): the reward goes out during the hold")
        if o.when is OutcomeWhen.REACHED and p.feedback.kind is not FeedbackKind.LICKPORT:
            raise ConfigError(file, f"{key}.when", o.when.value, "a condition other than 'lickport_reached' "
                              f"(feedback.kind is {p.feedback.kind.value!r}, not 'lickport')")
    if not p.outcomes.hit.enabled:
        raise ConfigError(file, "outcomes.hit.enabled", False, "true: a task without hits has nothing to reward")
    if not p.outcomes.timeout.enabled or p.outcomes.timeout.when is not OutcomeWhen.LENGTH:
        raise ConfigError(file, "outcomes.timeout", "(disabled or not at the trial length)",
                          "enabled with when = 'trial_length': every trial must end")
    if p.trials.refractory_fraction > 0 and p.trials.refractory_frames == 0:
        raise ConfigError(file, "trials.refractory_frames", 0, ">= 1 with trials.refractory_fraction > 0")
    if p.trials.start_below_fraction > 0 and p.trials.start_below_frames == 0:
        raise ConfigError(file, "trials.start_below_frames", 0, ">= 1 with trials.start_below_fraction > 0")
    cal = p.calibration
    if cal.rule is CalibrationRule.FIXED and cal.fixed_threshold is None:
        raise ConfigError(file, "calibration.fixed_threshold", MISSING, "a threshold: calibration.rule is 'fixed'")


def _check_phases(p: Protocol, file: str) -> None:
    """Kinds the task runs, each phase's own keys only, and an order that makes sense on every day."""
    days = sorted({ph.from_day for ph in p.phases}) or [1]
    for day in days:
        _check_phase_order(p, file, [(i, ph) for i, ph in enumerate(p.phases) if ph.from_day <= day], day)


def _check_phase_order(p: Protocol, file: str, phases: list[tuple[int, PhaseSpec]], day: int) -> None:
    seen: list[Phase] = []
    for i, ph in phases:
        key = f"phases[{i}]"
        if ph.kind in (Phase.WAITING, Phase.DONE, Phase.SAFE):
            raise ConfigError(file, f"{key}.kind", ph.kind.value, "a phase a protocol can list: " + ", ".join(
                k.value for k in (*MARKER_PHASES, *OPEN_PHASES, *TRIAL_PHASES)))
        if ph.kind not in OPEN_PHASES:
            for field_name in ("frames", "screen", "stimuli"):
                if getattr(ph, field_name) not in (0, None, False):
                    raise ConfigError(file, f"{key}.{field_name}", getattr(ph, field_name),
                                      f"nothing: a {ph.kind.value} phase has no {field_name} of its own")
        if ph.kind not in TRIAL_PHASES and ph.trials:
            raise ConfigError(file, f"{key}.trials", ph.trials, f"nothing: a {ph.kind.value} phase has no trials")
        if ph.kind in OPEN_PHASES and ph.kind is not Phase.BASELINE and ph.frames == 0:
            raise ConfigError(file, f"{key}.frames", MISSING, f"the {ph.kind.value} phase's length in frames (>= 1)")
        if ph.kind in MARKER_PHASES and ph.start is PhaseStart.OPERATOR:
            raise ConfigError(file, f"{key}.start", "operator", f"'auto': {ph.kind.value} takes no frames to start")
        order_error = ""
        if ph.kind is Phase.ALIGNMENT and seen:
            order_error = "alignment only first (the set-up phase aligns the field before any frame is decided)"
        elif ph.kind is Phase.CALIBRATION and Phase.BASELINE not in seen:
            order_error = "a baseline before the calibration (it calibrates on the last baseline)"
        elif ph.kind in TRIAL_PHASES and Phase.CALIBRATION not in seen:
            order_error = f"a calibration before {ph.kind.value} (its threshold)"
        elif ph.kind is Phase.DEGRADATION and not {Phase.CLOSED_LOOP, Phase.REINSTATEMENT} & set(seen):
            order_error = "closed_loop before degradation (it delivers rewards at the rate earned there)"
        elif ph.kind is Phase.REINSTATEMENT and Phase.DEGRADATION not in seen:
            order_error = "degradation before reinstatement"
        if order_error:
            on_day = f" on day {day}" if day > 1 else ""
            raise ConfigError(file, f"{key}.kind", ph.kind.value, f"{order_error}; phases so far{on_day}: "
                              + (", ".join(k.value for k in seen) or "none"))
        seen.append(ph.kind)
    plan = p.phase_plan(day)
    if not any(ph.kind in TRIAL_PHASES for ph in plan) and not any(ph.kind in OPEN_PHASES for ph in plan):
        raise ConfigError(file, "phases", "(no phase with frames)", "at least one phase with frames or trials")
    for i, ph in enumerate(plan):
        if ph.kind is Phase.BASELINE and ph.frames < p.trials.length_frames and Phase.CALIBRATION in [
                q.kind for q in plan[i + 1:]]:
            raise ConfigError(file, f"phases[{i}].frames" if p.phases else "baseline.frames", ph.frames,
                              f">= trials.length_frames ({p.trials.length_frames}): calibration resamples "
                              "trial-length windows")


def _check_protocol(p: Protocol, file: str) -> None:
    """Cross-field rules the per-field limits cannot express."""
    if p.imaging.bci_plane >= p.imaging.planes:
        raise ConfigError(file, "imaging.bci_plane", p.imaging.bci_plane, f"< imaging.planes ({p.imaging.planes})")
    _check_outcomes(p, file)
    _check_phases(p, file)
    if p.trials.grey_frames >= p.trials.length_frames:
        raise ConfigError(
            file, "trials.grey_frames", p.trials.grey_frames, f"< trials.length_frames ({p.trials.length_frames})"
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
    if src.kind == SourceKind.NETWORK and net.bind not in LOOPBACK:
        if net.framing == Framing.ZMQ and not (net.secret_key and net.allowed_keys):
            raise ConfigError(file, "source.network.secret_key", net.secret_key,
                              f"a CurveZMQ secret key file and source.network.allowed_keys when binding to "
                              f"{net.bind!r} (not loopback); make keys with `bcirig keys NAME`")
        if net.framing == Framing.TCP and not net.allow_network:
            raise ConfigError(file, "source.network.allow_network", net.allow_network,
                              f"true to listen with the unauthenticated plain-TCP framing on {net.bind!r} "
                              "(not loopback); prefer framing = 'zmq' with keys")
    if src.kind == SourceKind.TIFF and not src.tiff.directory:
        raise ConfigError(file, "source.tiff.directory", src.tiff.directory, "the folder the microscope writes")
    if src.kind == SourceKind.CUSTOM and ":" not in src.custom.class_path:
        raise ConfigError(file, "source.custom.class_path", src.custom.class_path, "'package.module:ClassName'")


def parse_rig(text: str, file: str = "<rig>") -> Rig:
    """Validate rig TOML text; raises ConfigError naming ``file``."""
    return _rig_from_table(_read_toml(text, file), text, file)


def _rig_from_table(table: dict[str, Any], text: str, file: str) -> Rig:
    _require_table(table, "rig", file)
    rig = build(Rig, table, file)
    if rig.valve.kind == ValveKind.SERIAL and not rig.valve.port:
        raise ConfigError(file, "valve.port", rig.valve.port, "a serial device path when valve.kind = 'serial'")
    _check_source(rig.source, file)
    if rig.valve.emulator_dir and not Path(rig.valve.emulator_dir).is_absolute() and Path(file).is_file():
        import dataclasses

        here = Path(file).resolve().parent
        rig = dataclasses.replace(rig, valve=dataclasses.replace(rig.valve,
                                                                 emulator_dir=str(here / rig.valve.emulator_dir)))
    if rig.bus.transport == Transport.TCP and rig.bus.host not in LOOPBACK:
        raise ConfigError(
            file, "bus.host", rig.bus.host,
            "a loopback address (binding to a network address needs CurveZMQ keys, not supported yet)",
        )
    return _replace_source(rig, text, file)


_Loaded = TypeVar("_Loaded", Protocol, Rig)


def _replace_source(obj: _Loaded, text: str, file: str) -> _Loaded:
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
