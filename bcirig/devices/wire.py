"""The valve controller's ASCII line protocol (hardware/valve-controller/PROTOCOL.md), host side.

One module formats commands and parses replies so the serial driver and the simulated twin read the
same text the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

SEQ_MAX = 65535
LINE_MAX = 48  # longest command line the firmware accepts, without the newline
ARG_MAX = 65535  # every numeric argument is an unsigned 16-bit decimal


class Verb(enum.StrEnum):
    """Command verbs on the wire."""

    REWARD = "R"
    REWARD_OPTO = "RO"
    OPTO = "O"
    LIMITS = "L"
    STATUS = "S"
    VERSION = "V"
    PING = "P"
    CLOSE = "C"


class ErrorCode(enum.StrEnum):
    """Error codes of ``<seq> ERR <code>`` replies."""

    SYNTAX = "SYNTAX"
    UNKNOWN = "UNKNOWN"
    RANGE = "RANGE"
    LONG = "LONG"
    NOISE = "NOISE"
    PARTIAL = "PARTIAL"
    INTERVAL = "INTERVAL"
    BUSY = "BUSY"
    WATCHDOG = "WATCHDOG"


@dataclass(frozen=True)
class Reply:
    """A reply line: ``seq`` is -1 for ``- ERR ...`` (a line that carried no sequence number)."""

    seq: int
    ok: bool
    word: str  # the verb for OK replies, the error code for ERR replies
    fields: dict[str, int] = field(default_factory=dict)
    text: str = ""  # the remaining free text (version string) and the raw line for errors
    line: str = ""


@dataclass(frozen=True)
class DeviceEvent:
    """An unsolicited line: ``! LICK t=...``, ``! WDOG t=...``, ``! BOOT ...``, ``! LICKDROP n=...``."""

    name: str
    fields: dict[str, int] = field(default_factory=dict)
    line: str = ""


def format_command(seq: int, verb: Verb, *args: int) -> str:
    """The command line for ``verb`` (with its newline)."""
    return " ".join([str(seq), verb.value, *(str(int(a)) for a in args)]) + "\n"


def _fields(words: list[str]) -> tuple[dict[str, int], str]:
    fields: dict[str, int] = {}
    rest: list[str] = []
    for w in words:
        key, sep, value = w.partition("=")
        if sep and value.isdigit():
            fields[key] = int(value)
        else:
            rest.append(w)
    return fields, " ".join(rest)


def parse_line(line: str) -> Reply | DeviceEvent | None:
    """Parse one line from the device; None when it is not a well-formed reply or event."""
    words = line.strip().split()
    if not words:
        return None
    if words[0] == "!":
        if len(words) < 2:
            return None
        fields, _ = _fields(words[2:])
        return DeviceEvent(words[1], fields, line.strip())
    if len(words) < 3 or words[1] not in ("OK", "ERR"):
        return None
    if words[0] == "-":
        seq = -1
    elif words[0].isdigit() and int(words[0]) <= SEQ_MAX:
        seq = int(words[0])
    else:
        return None
    fields, text = _fields(words[3:])
    return Reply(seq, words[1] == "OK", words[2], fields, text, line.strip())
