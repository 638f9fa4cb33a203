"""Go-style duration strings ("500ms", "10s", "1m30s", "2h") as used in the rollout spec."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

_UNIT_SECONDS: dict[str, Decimal] = {
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
    "us": Decimal("0.000001"),
    "ns": Decimal("0.000000001"),
}

# Longer units first so "ms" is not read as "m" followed by a stray "s".
_UNITS = "ns|us|ms|s|m|h"
_COMPONENT = rf"([0-9]+(?:\.[0-9]+)?)({_UNITS})"

DURATION_PATTERN = rf"^(0|([0-9]+(\.[0-9]+)?({_UNITS}))+)$"
"""Accepts "0" or one or more number+unit pairs. Usable as an OpenAPI `pattern` (RE2-safe)."""

DURATION_MAX_LENGTH = 32

# The longest duration a spec may name: a week is more than any step, pause, soak or timeout
# needs, and far from where the date arithmetic of the engine could overflow.
MAX_DURATION = timedelta(days=7)
MAX_DURATION_TEXT = "168h"

_DURATION_RE = re.compile(DURATION_PATTERN)
_COMPONENT_RE = re.compile(_COMPONENT)


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as "1m30s"; raises ValueError on anything else."""
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit (h, m, s, ms, us, ns), "
            'for example "30s", "1m30s" or "500ms"'
        )
    seconds = sum(
        (Decimal(number) * _UNIT_SECONDS[unit] for number, unit in _COMPONENT_RE.findall(text)),
        Decimal(0),
    )
    # Compared before it becomes a timedelta, which cannot hold 10**20 hours (OverflowError).
    if seconds > Decimal(MAX_DURATION.total_seconds()):
        raise ValueError(f"duration {text!r} is longer than the maximum, {MAX_DURATION_TEXT}")
    return timedelta(seconds=float(seconds))


def format_duration(value: timedelta) -> str:
    """Format a non-negative timedelta the way Go prints durations ("1h2m3s", "500ms", "0s")."""
    if value < timedelta(0):
        raise ValueError(f"cannot format a negative duration: {value}")
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        if micros % 1000 == 0:
            return f"{micros // 1000}ms"
        return f"{micros}us"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    text = ""
    if hours:
        text += f"{hours}h"
    if hours or minutes:
        text += f"{minutes}m"
    seconds_text = str(seconds)
    if fraction:
        seconds_text += "." + f"{fraction:06d}".rstrip("0")
    return text + seconds_text + "s"
