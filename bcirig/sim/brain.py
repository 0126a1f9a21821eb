"""The simulated mouse's brain: a rate network that senses the task and learns from its outcomes.

``tau dr/dt = -r + f(W_rec r + W_in u + b + xi)``, Euler-discretised at the imaging rate, ``f`` a
rectified-linear rate function saturating at ``max_rate_hz``, ``xi`` a slow Ornstein-Uhlenbeck
fluctuation (the spontaneous activity the calibration measures). Units are excitatory or inhibitory
(Dale's principle: the sign of every outgoing weight of a unit is fixed; learning clips at zero).

Layout of the units: ``[BCI somata | other excitatory | inhibitory]``. A few excitatory and inhibitory
units are *sensory*: tuned to the feedback value (grating orientation or tone pitch, as a position in
[0, 1] of the feedback range). Their synapses onto the BCI units start silent, so an untrained mouse's
readout has the same statistics in trials as in the grey-screen baseline (calibrated chance holds),
and they are where learning acts: the feedback stimulus exists only during trials, so what is learned
there does not leak into the next morning's baseline and is not calibrated away.

Learning (``rule``) changes the synapses from sensory units onto BCI units (``j`` sensory, ``i`` BCI),
at trial outcomes, through an eligibility trace ``e_ij = sum_t lambda^(T-t) post_i(t) r_j(t) dt``:

* ``vectorized``: each BCI unit's apical dendrite receives its own instructive signal ``s_i * R``
  (``s_i`` = +1 for P+, -1 for P-, ``R`` = 1 on the reward); ``dW_ij = eta * s_i * R * e_ij`` with the
  Hebbian ``post_i = f'(x_i)``. The sign comes from the group, not from the outcome: a failed trial
  carries no instructive signal (a signed error on failures would push P+ down on exactly the inputs
  active before an abort, a runaway toward more aborts);
* ``scalar``: one neuromodulatory reward-prediction error ``delta = R - V`` (``V`` a running reward
  expectation) broadcast to all, at hits and failures; node perturbation: ``dW_ij = eta * delta * e_ij``
  with ``post_i = xi_i / noise`` (each unit's own fluctuation) — REINFORCE, correct on average, slow;
* ``blocked``: vectorized with the dendritic signal removed (``block_fraction``) — the paper's
  perturbation; ``none``: no plasticity.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.config import Protocol
from bcirig.messages import Feedback, Screen, Sound, TrialState
from bcirig.processing.decoders import group_signs
from bcirig.schema import ConfigError
from bcirig.sim.config import LearningRule, SimConfig
from bcirig.threads import pin_blas_threads

# Non-feedback inputs the mouse senses, after the tuned feedback channels.
CONTEXT = ("grating", "grey", "black", "noise", "tone", "reward", "lick")


@dataclass
class MouseState:
    """What a mouse carries from one day to the next: its anatomy seed and its learned synapses."""

    anatomy_seed: int
    rule: LearningRule
    w_rec: np.ndarray  # (units, units); column j holds unit j's outgoing weights
    value: float = 0.5  # reward expectation V (hits per trial)
    day: int = 0  # days completed
    history: list[dict[str, float]] = field(default_factory=list)  # per-day learning statistics

    def copy(self) -> MouseState:
        """An independent copy (weights included)."""
        return MouseState(self.anatomy_seed, self.rule, self.w_rec.copy(), self.value, self.day,
                          [dict(h) for h in self.history])


@dataclass(frozen=True)
class Anatomy:
    """Fixed wiring of one mouse: unit types, BCI units and signs, sensory tuning, input weights."""

    n: int
    n_bci: int
    excitatory: np.ndarray  # (n,) bool
    sign: np.ndarray  # (n_bci,) +1 P+ / -1 P-
    w_in: np.ndarray  # (n, channels + len(CONTEXT))
    bias: np.ndarray  # (n,)
    plastic: np.ndarray  # presynaptic (sensory) units whose synapses onto BCI units learn
    lo: np.ndarray  # (n_bci, n_plastic) bounds of the plastic synapses (Dale's sign, max_weight)
    hi: np.ndarray
    channels: int


def _network_size(cfg: SimConfig, n_bci: int) -> tuple[int, int, bool]:
    """Units and inhibitory units of a network holding ``n_bci`` BCI units, and whether they fit.

    BCI units are excitatory and at least one other excitatory unit must remain.
    """
    n = max(cfg.units, n_bci + 4)
    n_inh = max(1, round(cfg.inhibitory_fraction * n))
    return n, n_inh, n - n_inh >= n_bci + 1


def check_bci_units(cfg: SimConfig, protocol: Protocol) -> None:
    """ConfigError naming ``rois.groups`` when the simulated network has no room for that many BCI units."""
    groups = protocol.rois.groups
    n_bci = sum(int(c) for c in groups.values())
    if _network_size(cfg, n_bci)[2]:
        return
    most = next(k for k in range(n_bci) if not _network_size(cfg, k + 1)[2])
    raise ConfigError(
        protocol.source_path or "<protocol>", "rois.groups", dict(groups),
        f"at most {most} BCI neurons in all (here {n_bci}): the simulated network has simulation.units = "
        f"{cfg.units} with inhibitory_fraction = {cfg.inhibitory_fraction:g}, and BCI neurons are excitatory",
    )


def build_anatomy(cfg: SimConfig, protocol: Protocol, seed: int) -> tuple[Anatomy, np.ndarray]:
    """Wire a mouse from its anatomy seed; returns the anatomy and (a copy of) the initial W_rec.

    Raises ConfigError (``rois.groups``) before any wiring when the network cannot hold the BCI units.
    """
    pin_blas_threads()  # the wiring's eigenvalues must not depend on the thread count (bcirig.threads)
    check_bci_units(cfg, protocol)  # before _wire allocates an (n, n) matrix for a huge n
    key = json.dumps([protocol.rois.groups, protocol.feedback.steps, protocol.readout.decoder], sort_keys=True)
    anatomy, w = _wire(cfg, key, seed)
    return anatomy, w.copy()


@functools.lru_cache(maxsize=8)
def _wire(cfg: SimConfig, key: str, seed: int) -> tuple[Anatomy, np.ndarray]:
    """Cached wiring (a day of a campaign rebuilds the same animal; the eigenvalues cost ~0.1 s)."""
    groups, channels, decoder = json.loads(key)
    rng = np.random.default_rng([seed, 0])
    counts = [int(c) for c in groups.values()]
    n_bci = sum(counts)
    n, n_inh, fits = _network_size(cfg, n_bci)
    n_exc = n - n_inh
    if not fits:  # build_anatomy refuses this first, naming the protocol's key
        raise ValueError(f"{n} units with {n_inh} inhibitory leave no room for {n_bci} BCI units")
    excitatory = np.arange(n) < n_exc
    # each BCI group's direction, as the protocol's decoder rewards it (the decoder says, not the simulator)
    sign = np.concatenate([np.full(c, s) for c, s in zip(counts, group_signs(decoder, groups), strict=True)])
    # Sparse random recurrent weights, inhibition balancing excitation on average, scaled to the radius.
    conn = rng.random((n, n)) < 0.2
    np.fill_diagonal(conn, False)
    mag = np.abs(rng.standard_normal((n, n))) * conn
    w = np.where(excitatory[None, :], mag, -mag * (n_exc / n_inh))
    radius = float(np.max(np.abs(np.linalg.eigvals(w))))
    w *= cfg.spectral_radius / radius if radius > 0 else 0.0
    # Sensory units: per channel, some excitatory (after the BCI units) and half as many inhibitory.
    n_in = channels + len(CONTEXT)
    w_in = np.zeros((n, n_in))
    exc_pool = rng.permutation(np.arange(n_bci, n_exc))
    inh_pool = rng.permutation(np.arange(n_exc, n))
    k_e = min(cfg.sensory_units_per_channel, len(exc_pool) // (2 * channels))
    k_i = min(max(1, cfg.sensory_units_per_channel // 2), len(inh_pool) // (2 * channels))
    sensory = []
    for c in range(channels):
        units = np.concatenate([exc_pool[c * k_e:(c + 1) * k_e], inh_pool[c * k_i:(c + 1) * k_i]])
        w_in[units, c] = cfg.sensory_gain_hz
        sensory.append(units)
    sens = np.concatenate(sensory) if sensory else np.zeros(0, int)
    # Sensory units' synapses onto the rest of the network start silent (see the module docstring).
    w[:, sens] = 0.0
    # Reward and licks (taste, touch, movement) drive the non-BCI, non-sensory units. The screen's state
    # (grey, black, grating on) does not: a naive mouse's BCI units must behave in trials as in the grey
    # baseline, or the calibrated chance level would be off before any learning.
    others = np.setdiff1d(np.arange(n_bci, n), sens)
    body = [channels + CONTEXT.index("reward"), channels + CONTEXT.index("lick")]
    w_in[np.ix_(others, body)] = rng.normal(0.0, cfg.context_hz, (len(others), len(body)))
    bias = np.full(n, cfg.rest_rate_hz)
    # Sensory units are silent on a grey screen (an orientation-tuned cell does not answer grey), so
    # synapses learned from them act in trials only and leave the baseline as it was.
    bias[sens] = -cfg.sensory_threshold_hz
    # Bounds of the plastic synapses onto BCI units: Dale's sign, |w| <= max_weight.
    plastic = np.sort(sens)
    exc_pre = excitatory[plastic][None, :]
    lo = np.where(exc_pre, 0.0, -cfg.max_weight) * np.ones((n_bci, 1))
    hi = np.where(exc_pre, cfg.max_weight, 0.0) * np.ones((n_bci, 1))
    anatomy = Anatomy(n, n_bci, excitatory, sign, w_in, bias, plastic, lo, hi, channels)
    return anatomy, w


def sense(fb: Feedback | None, feedback_cfg: Any, channels: int, width: float) -> np.ndarray:
    """What the mouse perceives on a frame: tuned channels for the feedback value, then CONTEXT flags."""
    u = np.zeros(channels + len(CONTEXT))
    if fb is None:
        u[channels + 1] = 1.0  # grey screen before anything happened
        return u
    moving = math.isfinite(fb.lickport_mm) and fb.lickport_mm > 0
    if fb.screen is Screen.GREY and fb.sound is Sound.NONE and not fb.reward and not moving:
        u[channels + 1] = 1.0  # the common case (baseline, ITI): nothing else to compute
        return u
    pos = float("nan")
    if fb.screen is Screen.GRATING and math.isfinite(fb.angle_deg):
        span = (feedback_cfg.steps - 1) * feedback_cfg.step_deg
        pos = 1.0 - (feedback_cfg.target_deg - fb.angle_deg) / span if span > 0 else 1.0
    elif fb.sound is Sound.TONE and math.isfinite(fb.tone_hz):
        pos = math.log(fb.tone_hz / feedback_cfg.tone_min_hz) / math.log(
            feedback_cfg.tone_max_hz / feedback_cfg.tone_min_hz)
    elif math.isfinite(fb.lickport_mm) and fb.state is not TrialState.NONE:  # the port's approach, seen and felt
        pos = fb.lickport_mm / feedback_cfg.lickport_travel_mm
    if math.isfinite(pos):
        prefs = np.arange(channels) / max(1, channels - 1)
        u[:channels] = np.exp(-0.5 * ((pos - prefs) / width) ** 2)
    u[channels + 0] = float(fb.screen is Screen.GRATING)
    u[channels + 1] = float(fb.screen is Screen.GREY)
    u[channels + 2] = float(fb.screen is Screen.BLACK)
    u[channels + 3] = float(fb.sound is Sound.WHITE_NOISE)
    u[channels + 4] = float(fb.sound is Sound.TONE)
    u[channels + 5] = float(fb.reward)
    return u


class Brain:
    """The rate network and its plasticity; one :meth:`step` per imaging frame."""

    def __init__(self, cfg: SimConfig, protocol: Protocol, state: MouseState, seed: int) -> None:
        self.cfg = cfg
        self.anatomy, w_naive = build_anatomy(cfg, protocol, state.anatomy_seed)
        frame_rate_hz = protocol.imaging.frame_rate_hz
        a = self.anatomy
        if state.w_rec.shape != (a.n, a.n):
            raise ValueError(f"carried W_rec has shape {state.w_rec.shape}, this brain has {a.n} units")
        self.state = state
        self.w = state.w_rec  # learned in place; MouseState owns it
        self.rng = np.random.default_rng([seed, 1])
        self.dt = 1.0 / frame_rate_hz
        self.alpha = min(1.0, self.dt / (cfg.tau_ms / 1000.0))
        self.xi_decay = math.exp(-self.dt / (cfg.noise_tau_ms / 1000.0))
        self.xi_scale = cfg.noise_hz * math.sqrt(1.0 - self.xi_decay**2)
        self.e_decay = math.exp(-self.dt / (cfg.eligibility_ms / 1000.0))
        self.r = np.full(a.n, cfg.rest_rate_hz)
        self.xi = self.rng.standard_normal(a.n) * cfg.noise_hz
        self.x = np.zeros(a.n)
        self.elig = np.zeros((a.n_bci, len(a.plastic)))
        self.instructive = np.zeros(a.n_bci)  # the dendritic signal s_i * delta, low-passed (for optics)
        # Engagement: how much the mouse uses what it learned, tracking whether its hits still earn rewards
        # (simulation.contingency_trials; 1 = always, the default). The learned part of the plastic synapses
        # is what it scales, so an unengaged mouse's readout has its naive statistics.
        self.engagement = 1.0
        self.w_naive_plastic = w_naive[: a.n_bci][:, a.plastic].copy()
        self.updates = 0
        self.abs_change = 0.0
        # Block noise draws: one generator call per 256 frames instead of per frame (speed).
        self._noise = np.zeros((0, a.n))
        self._k = 0

    def _draw(self) -> np.ndarray:
        if self._k >= len(self._noise):
            self._noise = self.rng.standard_normal((256, self.anatomy.n))
            self._k = 0
        z: np.ndarray = self._noise[self._k]
        self._k += 1
        return z

    def step(self, u: np.ndarray) -> np.ndarray:
        """Advance one frame under input ``u``; returns the rates (Hz) of all units."""
        a = self.anatomy
        cfg = self.cfg
        self.xi *= self.xi_decay
        self.xi += self.xi_scale * self._draw()
        x = self.w @ self.r
        if self.engagement < 1.0:
            nb, plastic = a.n_bci, a.plastic
            learned = self.w[:nb, plastic] - self.w_naive_plastic
            x[:nb] -= (1.0 - self.engagement) * (learned @ self.r[plastic])
        x += a.w_in @ u
        x += a.bias
        x += self.xi
        self.x = x
        phi = np.minimum(np.maximum(x, 0.0), cfg.max_rate_hz)  # np.clip costs ~3x more per call
        phi -= self.r
        phi *= self.alpha
        self.r += phi
        rule = cfg.rule
        if rule != LearningRule.NONE:
            nb = a.n_bci
            self.elig *= self.e_decay
            if rule == LearningRule.SCALAR:
                post = self.xi[:nb] / max(cfg.noise_hz, 1e-9)  # node perturbation: the unit's own fluctuation
            else:
                post = ((x[:nb] > 0) & (x[:nb] < cfg.max_rate_hz)).astype(float)  # f'(x)
            self.elig += np.outer(post * self.dt, self.r[a.plastic])
        self.instructive *= 0.9
        return self.r

    def hit_end(self, rewarded: bool) -> None:
        """A hit's hold ended, with or without its reward: engagement follows the contingency."""
        n = self.cfg.contingency_trials
        if n > 0:
            self.engagement += ((1.0 if rewarded else 0.0) - self.engagement) / n
        if not rewarded:
            self.omission()

    def omission(self) -> None:
        """A hit whose reward never came: the opposite instructive signal, ``omission_signal`` strong."""
        cfg = self.cfg
        if cfg.omission_signal <= 0 or cfg.rule not in (LearningRule.VECTORIZED, LearningRule.BLOCKED):
            return
        a = self.anatomy
        gate = 1.0 - cfg.block_fraction if cfg.rule is LearningRule.BLOCKED else 1.0
        signal = -a.sign * cfg.omission_signal * gate
        self.instructive += signal
        rows = self.w[: a.n_bci, a.plastic]
        new = np.clip(rows + cfg.learning_rate * signal[:, None] * self.elig, a.lo, a.hi)
        self.abs_change += float(np.abs(new - rows).sum())
        self.w[: a.n_bci, a.plastic] = new
        self.updates += 1

    def outcome(self, reward: float) -> float:
        """A trial ended with ``reward`` (1 hit, 0 miss): apply the rule; returns the prediction error."""
        cfg = self.cfg
        st = self.state
        delta = reward - st.value
        st.value += delta / cfg.value_trials
        a = self.anatomy
        if cfg.rule == LearningRule.NONE:
            return delta
        if cfg.rule == LearningRule.SCALAR:
            dw = cfg.scalar_learning_rate * delta * self.elig
        else:
            gate = 1.0 - cfg.block_fraction if cfg.rule == LearningRule.BLOCKED else 1.0
            signal = a.sign * reward * gate  # the dendritic instructive signal, per BCI unit
            self.instructive += signal
            dw = cfg.learning_rate * signal[:, None] * self.elig
        rows = self.w[: a.n_bci, a.plastic]
        new = np.clip(rows + dw, a.lo, a.hi)
        self.abs_change += float(np.abs(new - rows).sum())
        self.w[: a.n_bci, a.plastic] = new
        self.updates += 1
        return delta


def fresh_state(cfg: SimConfig, protocol: Protocol, anatomy_seed: int) -> MouseState:
    """Day-1 state of a naive mouse."""
    _, w = build_anatomy(cfg, protocol, anatomy_seed)
    return MouseState(anatomy_seed=anatomy_seed, rule=cfg.rule, w_rec=w)


def dale_violations(state: MouseState, cfg: SimConfig, protocol: Protocol) -> int:
    """Number of weights whose sign contradicts their presynaptic unit's type (0 when Dale holds)."""
    anatomy, _ = build_anatomy(cfg, protocol, state.anatomy_seed)
    exc = anatomy.excitatory
    w = state.w_rec
    return int(np.sum(w[:, exc] < 0) + np.sum(w[:, ~exc] > 0))


def is_trial_end(prev: Feedback | None, fb: Feedback) -> float | None:
    """1.0 on a rewarded frame, 0.0 when a trial ends unrewarded (abort or timeout), else None."""
    if fb.reward:
        return 1.0
    if prev is None or prev.state is not TrialState.ACTIVE:
        return None
    if fb.state in (TrialState.ABORT_HOLD, TrialState.TIMEOUT_HOLD, TrialState.ITI):
        return 0.0
    return None
