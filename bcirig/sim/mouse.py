"""The simulated mouse under a simulated microscope: feedback in, frame (or ROI traces) out.

One :meth:`SimulatedMouse.step` per imaging frame: the mouse senses the task's verdict on the previous
frame (screen, grating angle or tone, sounds, reward), its brain advances one frame and learns at trial
outcomes, it may lick, and the microscope renders what the network did. Deterministic given the seed:
the brain, the indicator/behaviour and the optics each draw from their own generator, so the pixel and
trace levels of the same seed see the same spontaneous brain activity until their feedback differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.config import FeedbackKind, Protocol
from bcirig.interfaces import SimFrame
from bcirig.messages import Feedback, TrialState
from bcirig.processing.rois import RoiKind
from bcirig.sim.brain import CONTEXT, Brain, MouseState, fresh_state, is_trial_end, sense
from bcirig.sim.config import SimConfig, SimLevel
from bcirig.sim.footprints import dendrite_plane, fov_offset, motion_margin, place_sources
from bcirig.sim.optics import Indicator, Optics
from bcirig.threads import pin_blas_threads


@dataclass
class TraceFrame:
    """The traces level's output for one frame: ROI F and neuropil (RoiSet order) and ground truth."""

    F: np.ndarray
    neuropil: np.ndarray
    truth: dict[str, Any] = field(default_factory=dict)


class SimulatedMouse:
    """A mouse that learns, imaged by a simulated two-photon microscope (a ``MouseStage``)."""

    def __init__(self, protocol: Protocol, config: SimConfig, seed: int, state: MouseState | None = None,
                 *, day: int = 1) -> None:
        pin_blas_threads()  # every product of the brain and optics on one thread (bcirig.threads)
        self.protocol = protocol
        self.config = config
        self.seed = int(seed)
        if state is None:
            state = fresh_state(config, protocol, self.seed)
        elif state.rule != config.rule:
            raise ValueError(f"carried state learned with rule '{state.rule}', config says '{config.rule}'")
        self._state = state
        self.brain = Brain(config, protocol, state, self.seed)
        n_bci = self.brain.anatomy.n_bci
        self.sources = place_sources(protocol, config, n_bci, self.brain.anatomy.n, state.anatomy_seed)
        self.src_unit = np.array([s.unit for s in self.sources], np.intp)
        self.src_dendrite = np.array([s.kind == RoiKind.DENDRITE for s in self.sources])
        self.dend_unit = self.src_unit[self.src_dendrite]
        self.bci_sources = np.array([k for k, s in enumerate(self.sources) if s.name], np.intp)
        somata = ~self.src_dendrite
        self.soma_mean = somata / max(1, int(somata.sum()))  # dff @ soma_mean = mean dF/F of the somata
        self.rng = np.random.default_rng([self.seed, 2])  # indicator, licks, motion, drift
        self.optics = Optics(protocol, config, self.sources, state.anatomy_seed,
                             np.random.default_rng([self.seed, 5]), pixels=config.level == SimLevel.PIXELS)
        self.indicator = Indicator(config, len(self.sources), protocol.imaging.frame_rate_hz)
        self.dt = 1.0 / protocol.imaging.frame_rate_hz
        self.frame_index = 0
        self.prev: Feedback | None = None
        self.hold_rewarded = False  # a reward came during the current hit's hold
        self.licks = 0
        # Lickport feedback: a lick reaches the spout only when the port is within reach (bcirig.nodes.lickport);
        # with any other feedback the spout is always there. Licking itself is the same either way.
        self.lickport = protocol.feedback.kind is FeedbackKind.LICKPORT
        self.reach_mm = min(config.lickport_reach_mm, protocol.feedback.lickport_travel_mm)
        self.contacts = 0
        self.since_reward_s = math.inf
        self.motion = np.zeros(2)
        self.motion_a = math.exp(-self.dt / 2.0)  # slow wander, ~2 s correlation
        self.motion_sd = config.motion_px * math.sqrt(1 - self.motion_a**2)
        self.jitter = 0.0
        self.drift = 0.0
        # Slow drift: a few random sinusoids (periods 1-10 min), smooth from frame to frame (sd = cfg.drift).
        omega = 2 * math.pi / self.rng.uniform(60.0, 600.0, 3)
        self.drift_waves = list(zip(omega.tolist(), self.rng.uniform(0.0, 2 * math.pi, 3).tolist(), strict=True))
        self.neuropil = 0.0
        self.npil_alpha = 1.0 - math.exp(-self.dt / 1.0)
        self.margin = motion_margin(config)
        self.day = int(day)
        self.fov_offset = fov_offset(config, self.seed, self.day)  # today's field vs day 1's (ground truth)
        self._roi_set: Any = None
        self._reference: np.ndarray | None = None
        self._roi_model: Any = None
        self._np_model: Any = None
        self.channels = protocol.feedback.steps
        self.lick_input = self.channels + CONTEXT.index("lick")
        self._warm_up(frames=round(6.0 * protocol.imaging.frame_rate_hz))

    def _warm_up(self, frames: int) -> None:
        """Run brain and indicator for a few seconds of grey screen, unimaged and without learning, so the
        first frame shows steady-state activity and calcium (a mouse is alive before imaging starts).
        The mean dF/F of the second half is the activity the reference image expects."""
        u = sense(None, self.protocol.feedback, self.channels, self.config.tuning_width)
        acc = np.zeros(len(self.sources))
        for i in range(frames):
            r = self.brain.step(u)
            rates = r[self.src_unit]
            if len(self.dend_unit):
                rates = rates.copy()
                rates[self.src_dendrite] = 1.0 + self.config.dendrite_bap * r[self.dend_unit]
            _, dff = self.indicator.step(rates, self.rng)
            if i >= frames // 2:
                acc += dff
        self.brain.elig[...] = 0.0
        self.expected_dff = acc / max(1, frames - frames // 2)

    # ------------------------------------------------------------------------------------ geometry
    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(planes, height, width) of every frame."""
        im = self.protocol.imaging
        return (im.planes, im.height, im.width)

    @property
    def dtype(self) -> np.dtype:
        """The protocol's frame dtype."""
        return np.dtype(self.protocol.imaging.dtype)

    def rois(self) -> Any:
        """The true ROIs: a disk inside each BCI soma (group, kind soma) and on each of its dendrites."""
        if self._roi_set is None:
            from bcirig.processing.rois import Roi, RoiSet

            rois = []
            for s in self.sources:
                if not s.name:
                    continue
                radius = max(1.0, s.radius - 0.5)
                if s.kind == RoiKind.DENDRITE and not self.protocol.rois.dendrites:
                    continue
                rois.append(Roi.disk(s.name, s.plane, (s.cy, s.cx), radius, group=s.group, kind=s.kind,
                                     parent=s.parent))
            self._roi_set = RoiSet(rois)
        return self._roi_set

    def reference_image(self) -> np.ndarray:
        """Motion-free, noise-free expected frame (float32 counts, PMT offset included): resting image plus
        the steady-state activity of the warm-up; the pipeline's registration reference."""
        if self._reference is None:
            planes, h, w = self.frame_shape
            o = self.optics
            img = o.base.astype(np.float64).reshape(-1)
            extra = o.rest * self.expected_dff
            vals = np.bincount(o.pix_u, weights=o.pix_w * extra[o.pix_src], minlength=len(o.pix_unique))
            img[o.pix_unique] += vals
            img *= 1.0 + self.config.neuropil_coupling * float(self.expected_dff[~self.src_dendrite].mean())
            self._reference = (img + self.config.pmt_offset).reshape(planes, h, w).astype(np.float32)
        return self._reference.copy()

    # ------------------------------------------------------------------------------------ stepping
    def state(self) -> MouseState:
        """The learned state to carry to tomorrow (a copy; this mouse keeps running on its own)."""
        st = self._state.copy()
        return st

    def finish_day(self) -> MouseState:
        """End of the day: count it and return the state for tomorrow."""
        self._state.day += 1
        self._state.history.append({"updates": float(self.brain.updates), "abs_change": self.brain.abs_change,
                                    "value": self._state.value})
        return self.state()

    def _advance(self, feedback: Feedback | None) -> tuple[np.ndarray, float, tuple[int, int], dict[str, Any]]:
        """Brain + indicator + behaviour + motion for one frame; returns (extra counts, scale, shift, truth)."""
        cfg = self.config
        outcome = is_trial_end(self.prev, feedback) if feedback is not None else None
        delta = self.brain.outcome(outcome) if outcome is not None else float("nan")
        if feedback is not None:  # a hit's hold ended: was it rewarded (degradation: no, an omission)
            if feedback.state is TrialState.HIT_HOLD:
                self.hold_rewarded = self.hold_rewarded or feedback.reward
            elif self.prev is not None and self.prev.state is TrialState.HIT_HOLD:
                self.brain.hit_end(self.hold_rewarded)
                self.hold_rewarded = False
        if feedback is not None and feedback.reward:
            self.since_reward_s = 0.0
        self.prev = feedback
        u = sense(feedback, self.protocol.feedback, self.channels, cfg.tuning_width)
        u[self.lick_input] = float(self.licks)
        r = self.brain.step(u)
        rates = r[self.src_unit]
        if len(self.dend_unit):
            rates = rates.copy()
            rates[self.src_dendrite] = np.maximum(
                1.0 + cfg.dendrite_bap * r[self.dend_unit] + cfg.dendrite_signal_hz * self.brain.instructive, 0.0)
        spikes, dff = self.indicator.step(rates, self.rng)
        extra = self.optics.rest * dff
        # Behaviour: spontaneous + consummatory + anticipatory licking (expectation x grating near target).
        lick_hz = cfg.lick_rate_hz + cfg.consummatory_lick_hz * math.exp(-self.since_reward_s / cfg.consummatory_s)
        lick_hz += 3.0 * self._state.value * float(u[self.channels - 1])
        self.licks = int(self.rng.poisson(lick_hz * self.dt))
        self.contacts = self.licks if not self.lickport or self._spout_in_reach(feedback) else 0
        self.since_reward_s += self.dt
        # Brightness: bleaching, slow drift, neuropil (population activity) as one global factor.
        t_s = self.frame_index * self.dt
        self.drift = cfg.drift * sum(math.sin(w * t_s + ph) for w, ph in self.drift_waves) / math.sqrt(1.5)
        # Neuropil sums many unresolved neurites: a smoothed (~1 s) population signal, not per-frame spikes.
        population = float(dff @ self.soma_mean)
        if self.frame_index == 0:
            self.neuropil = population  # start at the level, not from zero (no ramp on the first frames)
        self.neuropil += self.npil_alpha * (population - self.neuropil)
        scale = math.exp(-t_s / cfg.bleach_tau_s) * (1.0 + self.drift) * (1.0 + cfg.neuropil_coupling * self.neuropil)
        # Rigid motion: slow wander + a jaw-driven jolt per lick, integer pixels within the margin.
        self.motion *= self.motion_a
        self.motion += self.motion_sd * self.rng.standard_normal(2)
        self.jitter = 0.6 * self.jitter + cfg.lick_jitter_px * self.licks
        fy, fx = self.fov_offset
        dy = min(max(round(float(self.motion[0]) + self.jitter) + fy, -self.margin), self.margin)
        dx = min(max(round(float(self.motion[1])) + fx, -self.margin), self.margin)
        truth = {
            "shift": [dy - fy, dx - fx],  # brain motion against today's field (the day's offset: fov_offset)
            "licks": self.licks,
            "contacts": self.contacts,  # licks that touched the spout (all of them unless a lickport is out of reach)
            "rpe": delta,
            "rates": r[: self.brain.anatomy.n_bci].astype(np.float32),
            "spikes": spikes[self.bci_sources].astype(np.int16),  # BCI somata, then their dendrites
            "dff": dff.astype(np.float32),
            "scale": scale,
        }
        self.frame_index += 1
        return extra, scale, (dy, dx), truth

    def _spout_in_reach(self, feedback: Feedback | None) -> bool:
        """Whether the lickport the mouse senses has come ``reach_mm`` toward it (NaN: at its start)."""
        travelled = feedback.lickport_mm if feedback is not None else math.nan
        return math.isfinite(travelled) and travelled >= self.reach_mm - 1e-9

    def step(self, feedback: Feedback | None) -> SimFrame:
        """Sense ``feedback`` (the task's verdict on the previous frame; None at first) and render a frame."""
        extra, scale, shift, truth = self._advance(feedback)
        return SimFrame(data=self.optics.render(extra, scale, shift), truth=truth)

    def step_traces(self, feedback: Feedback | None) -> TraceFrame:
        """Traces level: the ROI F and neuropil the pipeline would measure on the motion-corrected frame."""
        if self._roi_model is None:
            self._build_trace_models()
        extra, scale, _shift, truth = self._advance(feedback)
        f = self._roi_model.traces(extra, scale, self.optics.rng)
        npil = self._np_model.traces(extra, scale, self.optics.rng)
        return TraceFrame(F=f, neuropil=npil, truth=truth)

    def _build_trace_models(self) -> None:
        from bcirig.sim.neuropil import neuropil_masks

        rois = self.rois()
        masks = [(r.plane, r.y, r.x, r.w.astype(np.float64)) for r in rois]
        self._roi_model = self.optics.roi_model(masks)
        self._np_model = self.optics.roi_model(neuropil_masks(rois, self.protocol))

    @property
    def dendrite_plane(self) -> int | None:
        """Plane of the BCI dendrites (None with one plane)."""
        return dendrite_plane(self.protocol)
