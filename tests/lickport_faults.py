"""A lickport node that fails mid-session (test-only fault injection, started as ``tests.lickport_faults:...``)."""

from __future__ import annotations

from bcirig.devices import LickportStatus
from bcirig.nodes.lickport import LickportNode, _Asked

FAIL_AT_MM = 2.0


class LickportNodeThatFails(LickportNode):
    """Raises once the port has come FAIL_AT_MM toward the mouse, as a bug in the node would."""

    def _report(self, asked: _Asked, status: LickportStatus) -> None:
        super()._report(asked, status)
        if not asked.retracting and status.position_mm - self.start_mm >= FAIL_AT_MM:
            raise RuntimeError(f"injected failure with the port at {status.position_mm:.3f} mm")
