"""Bus command -> valve method -> bus acknowledgement, for the valve node's single-threaded loop."""

from __future__ import annotations

from bcirig.devices.valve import SimulatedValveController, ValveAck, ValveController
from bcirig.messages import Ack, Action, Command


def execute_command(valve: ValveController | SimulatedValveController, command: Command) -> Ack:
    """Run one task ``Command`` on the valve and build its ``Ack``.

    A refusal (too soon, busy, invalid volume) is an ``Ack`` with ``ok`` False and the reason; only a
    dead port raises (:class:`~bcirig.devices.ValveError`). The command's ``t_ns`` stamps are carried
    over and ``valve_sent`` / ``valve_ack`` (host monotonic ns around the device round trip) are added.
    """
    try:
        ack: ValveAck
        if command.action is Action.REWARD:
            ack = valve.reward(command.reward_ul)
        elif command.action is Action.OPTO:
            ack = valve.opto(command.opto_ms)
        elif command.action is Action.REWARD_OPTO:
            ack = valve.reward_opto(command.reward_ul, command.opto_ms)
        elif command.action is Action.CLOSE:
            ack = valve.close_valve()
        else:  # pragma: no cover - Action is a closed enum
            raise ValueError(f"valve cannot do {command.action!r}")
    except ValueError as exc:
        return Ack(frame=command.frame, command_id=command.command_id, action=command.action, ok=False,
                   error=f"invalid command: {exc}", t_ns=dict(command.t_ns))
    return Ack(
        frame=command.frame, command_id=command.command_id, action=command.action, ok=ack.ok, error=ack.error,
        open_ms=ack.open_ms, device_ms=ack.device_ms,
        t_ns={**command.t_ns, "valve_sent": ack.t_sent_ns, "valve_ack": ack.t_ack_ns},
    )
