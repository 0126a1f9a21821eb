"""Which feedback changes the display presents, with which photodiode code: a stage (no Qt, no clock).

The task sends a feedback message every imaging frame; most repeat what the screen already shows. A
*change* is a new screen (grating, grey, black) or the grating at a new orientation; the drift is not
a change. The display node hands every feedback to :meth:`DisplayPresenter.feedback` with its arrival
time, draws :attr:`DisplayPresenter.target` when :attr:`~DisplayPresenter.due`, and after the buffer
swap calls :meth:`~DisplayPresenter.presented`, which returns the :class:`~bcirig.messages.Presentation`
to record. Changes that arrive faster than the display swaps (lockstep sessions run faster than any
screen) are replaced by the newest before they are shown; the next presentation counts them in
``skipped``, so ``rows + sum(skipped)`` is the number of changes the task asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bcirig.gui.photodiode import code_for_change
from bcirig.messages import Feedback, Presentation, PresentClock, Presented, Screen


@dataclass(frozen=True)
class ScreenState:
    """What the mouse's screen shows: the screen and, for a grating, its orientation (NaN otherwise)."""

    screen: Screen = Screen.GREY
    angle_deg: float = float("nan")

    @classmethod
    def of(cls, screen: Screen, angle_deg: float) -> ScreenState:
        """The state for a feedback's screen and angle (a grating without a finite angle is grey)."""
        if screen is Screen.GRATING and math.isfinite(angle_deg):
            return cls(Screen.GRATING, float(angle_deg))
        return cls(Screen.BLACK if screen is Screen.BLACK else Screen.GREY, float("nan"))

    def same(self, other: ScreenState) -> bool:
        """Whether the screen would look the same (the drift aside)."""
        return self.screen is other.screen and (self.screen is not Screen.GRATING or self.angle_deg == other.angle_deg)


class DisplayPresenter:
    """Tracks the shown and the wanted screen state, the photodiode code and the changes skipped."""

    def __init__(self) -> None:
        self.shown = ScreenState()  # the display opens grey
        self.target = ScreenState()
        self.target_frame = -1
        self.target_update_ns = -1
        self.changes = 0  # changes the task asked for
        self.count = 0  # changes presented: the photodiode code is count % 4
        self.skipped = 0  # replaced before presentation since the last one
        self.forced = False  # a change back to what the screen shows, after one never shown: redraw it

    @property
    def code(self) -> int:
        """The photodiode code of what the screen shows now."""
        return code_for_change(self.count)

    @property
    def draw_code(self) -> int:
        """The code to draw with :attr:`target`: the next one when a change is due."""
        return code_for_change(self.count + 1) if self.due else self.code

    @property
    def due(self) -> bool:
        """Whether the target differs from what the screen shows (draw and swap now)."""
        return self.forced or not self.shown.same(self.target)

    def feedback(self, fb: Feedback, t_update_ns: int) -> bool:
        """Take one frame's feedback (arrived at ``t_update_ns``); True if the screen must change."""
        return self.want(ScreenState.of(fb.screen, fb.angle_deg), fb.frame, t_update_ns)

    def want(self, state: ScreenState, frame: int, t_update_ns: int) -> bool:
        """Ask for ``state`` (a feedback, or the grey of a safe stop); True if the screen must change."""
        if not state.same(self.target):
            self.changes += 1
            if self.due:  # the previous change was never shown
                self.skipped += 1
                # back to what the screen still shows: present it anyway (the patch code moves on), so that
                # every change the task asked for is a row or counted in one's skipped
                self.forced = state.same(self.shown)
            self.target, self.target_frame, self.target_update_ns = state, frame, t_update_ns
        return self.due

    def presented(self, t_presented_ns: int, clock: PresentClock) -> Presentation | None:
        """The swap after drawing :attr:`target` happened at ``t_presented_ns``: its record (None if no change)."""
        if not self.due:
            return None
        what = Presented.SCREEN if self.target.screen is not self.shown.screen else Presented.ANGLE
        self.shown = self.target
        self.forced = False
        self.count += 1
        rec = Presentation(frame=self.target_frame, what=what, screen=self.target.screen,
                           angle_deg=self.target.angle_deg, code=self.code, skipped=self.skipped, clock=clock,
                           t_update_ns=self.target_update_ns, t_presented_ns=t_presented_ns)
        self.skipped = 0
        return rec
