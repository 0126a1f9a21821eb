"""The simulated mouse licks the lickport's spout only when the port has been brought within reach.

Through the simulated frame source, which hands the rig's lick sensor the mouse's contacts: with a
lickport protocol and the port held short of ``simulation.lickport_reach_mm`` the mouse still licks
(the jaw moves the brain, ground truth counts the licks) but no contact reaches the sensor; with the port
in reach every lick is a contact. Without a lickport, nothing changes.
"""

from __future__ import annotations

import math

from bcirig.acquisition.simulated import SimulatedSource
from bcirig.config import Protocol, load_rig, parse_protocol
from bcirig.messages import Feedback, Phase, Screen
from tests.conftest import ROOT, protocol_text

RIG = load_rig(ROOT / "hardware" / "rigs" / "sim.toml")  # the source needs a rig only for its seed
FRAMES = 240  # 8 s at 30 Hz; at 10 licks/s about 80 licks


def protocol(lickport: bool, simulation: str = "", travel_mm: float = 7.0) -> Protocol:
    feedback = {"feedback": f'kind = "lickport"\nlickport_travel_mm = {travel_mm}'} if lickport else {}
    return parse_protocol(protocol_text(imaging="frame_rate_hz = 30.0\nheight = 96\nwidth = 96",
                                        simulation="lick_rate_hz = 10.0\nimaged_neurons = 4\n" + simulation,
                                        **feedback))


def run(p: Protocol, lickport_mm: float) -> tuple[list[int], int]:
    """Licks per frame (ground truth) and the contacts the sensor got, with the port held at lickport_mm."""
    source = SimulatedSource(p, RIG)
    source.open()
    licks = []
    for frame in range(FRAMES):
        source.sense(Feedback(frame=frame - 1, phase=Phase.CLOSED_LOOP, screen=Screen.GREY, lickport_mm=lickport_mm,
                              lickport_speed_mm_s=0.0))
        planes = source.read()
        licks.append(int(planes[-1].truth["licks"]))
    return licks, sum(c.count for c in source.take_contacts())


def test_a_port_out_of_reach_gets_no_contact_one_in_reach_gets_every_lick() -> None:
    p = protocol(lickport=True)
    short_licks, short_contacts = run(p, 6.9)  # the default reach is the whole 7 mm travel
    start_licks, start_contacts = run(p, math.nan)  # not driven: at its start
    in_licks, in_contacts = run(p, 7.0)
    assert sum(short_licks) >= 40 and short_contacts == 0  # it licked, into the air
    assert start_contacts == 0
    assert in_contacts == sum(in_licks) >= 40
    # licking itself does not depend on where the port is (the same brain, the same draws)
    assert short_licks == start_licks == in_licks


def test_the_reach_is_the_protocols_and_without_a_lickport_nothing_changes() -> None:
    near = protocol(lickport=True, simulation="lickport_reach_mm = 2.5\n")
    licks, contacts = run(near, 3.0)
    assert contacts == sum(licks) >= 40
    assert run(near, 2.0)[1] == 0
    # a reach beyond the protocol's travel is the travel: a port brought all the way in is always licked
    short_travel = protocol(lickport=True, travel_mm=5.0)
    assert run(short_travel, 5.0)[1] == sum(licks) and run(short_travel, 4.9)[1] == 0
    # a grating protocol: every lick touches the spout, wherever a lickport_mm says (it is ignored)
    grating = protocol(lickport=False)
    g_licks, g_contacts = run(grating, math.nan)
    assert g_contacts == sum(g_licks) == sum(licks)
    assert run(grating, 0.0)[1] == g_contacts
