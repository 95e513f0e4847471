"""Amounts at the API's edge, the same for every route, MCP tool and the Python client.

In a request, ``x`` is a decimal in the currency's major units ("0.50", or the JSON number 0.50
read exactly) and ``x_minor`` an integer of minor units (50); a request gives one of the two,
never both. Every response that carries money gives both. The conversion uses the currency's
exponent as the database has it (``api.currencies_v1``) and exact decimal arithmetic; whether an
amount is allowed (its decimals, its sign, its size) stays the database's call, except for
payments, whose stored functions take minor units: there a decimal with more decimals than the
currency has is refused here, with the database's own message and code.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from db import queries
from db.errors import DomainError

BIGINT_MAX = 2**63 - 1

# Amounts reach 60 digits at most (api.models refuses longer ones): this precision never rounds.
_EXACT = decimal.Context(prec=200, traps=[decimal.Inexact, decimal.InvalidOperation])

# Currency code -> exponent. Reference data that only a migration changes (and no migration may
# change the exponent of a currency in use: every stored amount would change its meaning), read
# once per process and again when a code not seen before comes by.
_exponents: dict[str, int] = {}


async def exponent(conn: AsyncConnection[Any], currency: str) -> int | None:
    """The currency's exponent, or None when Tollgate does not accept the currency."""
    code = currency.upper()
    found = _exponents.get(code)
    if found is None:
        _exponents.update({c.code: c.exponent for c in await queries.currencies(conn)})
        found = _exponents.get(code)
    return found


def decimal_of(minor: int, exp: int) -> Decimal:
    """Minor units as a decimal with the currency's decimals: (50, 2) -> Decimal("0.50")."""
    return _EXACT.scaleb(Decimal(minor), -exp)


def text_of(minor: int, exp: int) -> str:
    """Minor units as the API writes amounts: (50, 2) -> "0.50", (1250, 0) -> "1250"."""
    return format(decimal_of(minor, exp), "f")


def minor_of(amount: Decimal, exp: int) -> int | None:
    """A decimal as minor units, or None when it has more decimals than the currency."""
    scaled = _EXACT.scaleb(amount, exp)
    if _EXACT.to_integral_value(scaled) != scaled:
        return None
    return int(scaled)


async def _known(conn: AsyncConnection[Any], currency: str | None) -> int:
    exp = None if currency is None else await exponent(conn, currency)
    if exp is None:
        raise DomainError("invalid", "unknown_currency", f"unknown currency {currency}")
    return exp


async def as_decimal(
    conn: AsyncConnection[Any], currency: str | None, amount: Decimal | None, minor: int | None
) -> Decimal | None:
    """What a stored function taking a decimal gets: ``amount`` as sent, or ``minor`` in major
    units (exactly: the function converts it back to the same minor units)."""
    if minor is None:
        return amount
    return decimal_of(minor, await _known(conn, currency))


async def required_decimal(
    conn: AsyncConnection[Any], currency: str | None, amount: Decimal | None, minor: int | None
) -> Decimal:
    """As ``as_decimal``, for a request whose model requires one of the two."""
    found = await as_decimal(conn, currency, amount, minor)
    if found is None:  # the request models refuse this before it gets here
        raise DomainError("invalid", "amount_required", "give amount or amount_minor")
    return found


async def as_minor(
    conn: AsyncConnection[Any], currency: str | None, amount: Decimal | None, minor: int | None
) -> int | None:
    """What a stored function taking minor units gets: ``minor`` as sent, or ``amount``
    converted exactly; more decimals than the currency has are refused, never rounded."""
    if amount is None:
        return minor
    exp = await _known(conn, currency)
    found = minor_of(amount, exp)
    if found is None:
        raise DomainError(
            "invalid",
            "invalid_amount",
            f"{currency.upper() if currency else ''} amounts have at most {exp} decimals: "
            f"{amount} has more",
        )
    if abs(found) > BIGINT_MAX:
        raise DomainError("invalid", "invalid_amount", f"amount {amount} is out of range")
    return found


async def minors(
    conn: AsyncConnection[Any], currency: str | None, **amounts: str | None
) -> dict[str, int | None]:
    """``{name}_minor`` for each decimal text a stored function answered (written with the
    currency's decimals), so a response carries both forms."""
    exp = None if currency is None else await exponent(conn, currency)
    out: dict[str, int | None] = {}
    for name, text in amounts.items():
        if text is None or exp is None:
            out[f"{name}_minor"] = None
            continue
        found = minor_of(Decimal(text), exp)
        if found is None:  # the database writes amounts with the currency's decimals
            raise RuntimeError(f"{name} {text} is not a whole number of {currency} minor units")
        out[f"{name}_minor"] = found
    return out


async def minor(conn: AsyncConnection[Any], currency: str, text: str) -> int:
    """One decimal text a stored function answered, in minor units."""
    found = (await minors(conn, currency, amount=text))["amount_minor"]
    if found is None:
        raise RuntimeError(f"amount in unknown currency {currency}")
    return found


async def payment_fields(conn: AsyncConnection[Any], payment: Mapping[str, Any]) -> dict[str, Any]:
    """A payment as the database answers it (``amount`` in minor units) in the API's form:
    ``amount`` a decimal string, ``amount_minor`` the integer."""
    minor = int(payment.get("amount_minor", payment["amount"]))
    exp = await exponent(conn, str(payment["currency"]))
    if exp is None:
        raise RuntimeError(f"payment in unknown currency {payment['currency']}")
    return {**payment, "amount": text_of(minor, exp), "amount_minor": minor}
