"""Python values as the JSON the database functions take (``data``, ``match``,
batch operations).

The database reads each value into its column's type from JSON text, so a
value is written as the text PostgreSQL's input function for that type reads
back exactly: ``Decimal`` as a JSON number with all its digits (a numeric
column keeps its scale; a json/jsonb column gets a number), non-finite
``Decimal`` and ``float`` as ``"NaN"``/``"Infinity"``/``"-Infinity"`` (JSON has
no such numbers; float, numeric and text columns read the text), date/time values in ISO 8601,
``timedelta`` in seconds and microseconds, ``UUID``, IP addresses and
``Path`` as their text, bytes as bytea hex (``"\\x..."``), sets as arrays,
an ``Enum`` as its value. Anything else raises ``TypeError`` naming the type,
before anything is sent.

The JSON text is ASCII (other characters as ``\\u`` escapes, which jsonb
reads back as the characters): psycopg encodes jsonb parameters as UTF-8
whatever the connection's client_encoding, and the server would read them in
that encoding (LATIN1: "é" stored as "Ã©").
"""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import json
import math
import pathlib
import re
import secrets
import uuid
from typing import Any

from psycopg.types.json import Jsonb

# A Decimal travels through json.dumps as this string, then becomes the
# bare number. The token is random per process, so no string of the app's
# can be mistaken for it; the number must also match JSON's grammar.
_DECIMAL_MARK = f"\x00{secrets.token_hex(16)}:"
_DECIMAL_IN_JSON = re.compile(
    '"'
    + re.escape(json.dumps(_DECIMAL_MARK)[1:-1])
    + r'(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"'
)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return _DECIMAL_MARK + str(value) if value.is_finite() else _non_finite(value)
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(
        value,
        uuid.UUID
        | pathlib.PurePath
        | ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface,
    ):
        return str(value)
    raise TypeError(
        f"a value of type {type(value).__name__} cannot be sent as JSON: "
        "convert it to str, a number, a list or a dict first"
    )


def _non_finite(value: decimal.Decimal) -> str:
    if value.is_nan():
        return "NaN"
    return "-Infinity" if value.is_signed() else "Infinity"


def _finite_floats(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_floats(item) for item in value]
    return value


def dumps(value: Any) -> str:
    """JSON text of ``value`` (see the module's docstring)."""
    try:
        text = json.dumps(value, default=_default, allow_nan=False)
    except ValueError as error:
        if not str(error).startswith("Out of range float"):
            raise  # a circular structure
        # Rare, so walked only then: a non-finite float, where json.dumps
        # would write NaN/Infinity, which no JSON parser reads.
        text = json.dumps(
            _finite_floats(value),
            default=lambda item: _finite_floats(_default(item)),
            allow_nan=False,
        )
    if "\\u0000" in text:
        text = _DECIMAL_IN_JSON.sub(r"\1", text)
    return text


def to_jsonb(value: Any) -> Jsonb:
    """``value`` as a jsonb query parameter, serialized now: a value that
    cannot be sent raises here, before a call starts."""
    text = dumps(value)
    return Jsonb(value, dumps=lambda _: text)
