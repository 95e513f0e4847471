"""Tollgate's synchronous client: one typed method per HTTP route.

Generated from ``tollgate/_async_client.py`` by ``python client/tollgate/_unasync.py``:
edit that file, not this one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from tollgate import models
from tollgate._core import (
    READ_AFTER_HEADER,
    Call,
    T,
    TollgateError,
    Unavailable,
    later_write,
    pause,
    result,
    retry_exception,
    retry_response,
)

# A decimal in the currency's units: Decimal("12.50"), "12.50" or 12 (never a float). Each
# method taking one also takes its ``*_minor`` twin, an integer of minor units (1250): one of
# the two, never both. Answers carry both forms.
Amount = Decimal | int | str


def _json(model: BaseModel) -> Any:
    # Decimals travel as strings ("12.50"): exact, and accepted wherever an amount is.
    return model.model_dump(mode="json", exclude_none=True)


def _dec(amount: Amount | None) -> Decimal | None:
    return None if amount is None else Decimal(amount)


def _query(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


class Client:
    """Talks to one Tollgate with one API key.

    ``base_url`` and ``api_key`` default to ``TOLLGATE_URL`` and ``TOLLGATE_API_KEY``. A request
    is sent again, up to ``retries`` times with exponential backoff from ``backoff`` seconds (or
    the server's Retry-After, up to a minute), when nothing was done (503 database_unavailable,
    a connection that never opened, an Idempotency-Key still in use), and after any 502/503/504
    or lost answer when sending it twice is harmless (reads, PUTs, payments and transfers, usage
    batches). Payments and transfers get an Idempotency-Key when none is given, the same one on
    every retry, so a retried payment is created once. Errors raise the subclasses of
    ``TollgateError``; a refused authorization raises ``PaymentRequired``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.25,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("TOLLGATE_URL", "http://127.0.0.1:8000")
        api_key = api_key or os.environ.get("TOLLGATE_API_KEY")
        if not api_key:
            raise ValueError("an API key is needed: pass api_key or set TOLLGATE_API_KEY")
        self.retries = retries
        self.backoff = backoff
        self._account: str | None = None
        # The newest write position answered (Tollgate-Write-Lsn), sent back with every GET so
        # that it reads this client's writes whichever worker answers.
        self._written: str | None = None
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "tollgate-python"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, retrying what is safe to retry; the parsed answer or a typed error."""
        attempt = 0
        while True:
            headers = call.headers
            if call.method == "GET" and self._written:
                headers = headers | {READ_AFTER_HEADER: self._written}
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=headers
                )
            except httpx.TransportError as exc:
                wait = pause(attempt, None, self.backoff)
                if attempt < self.retries and wait is not None and retry_exception(call, exc):
                    time.sleep(wait)
                    attempt += 1
                    continue
                raise Unavailable(0, "unreachable", f"{type(exc).__name__}: {exc}") from exc
            self._written = later_write(self._written, response)
            wait = pause(attempt, response, self.backoff)
            if attempt < self.retries and wait is not None and retry_response(call, response):
                time.sleep(wait)
                attempt += 1
                continue
            return result(call, response)

    # Who am I, and is Tollgate up

    def me(self) -> models.Identity:
        """The account this key belongs to and whether it is an admin key."""
        return self.send(Call("GET", "/v1/me", models.Identity, idempotent=True))

    def _own_account(self) -> str:
        # A key's account never changes: asked once per client.
        if self._account is None:
            self._account = (self.me()).account_id
        return self._account

    def ready(self) -> bool:
        """True when Tollgate and its database answer."""
        try:
            self.send(Call("GET", "/readyz", models.Health, idempotent=True))
        except TollgateError:
            return False
        return True

    # Gating

    def authorize(
        self,
        action: str,
        *,
        account_id: str | None = None,
        cost: Amount | None = None,
        cost_minor: int | None = None,
        currency: str | None = None,
        agent_id: str | None = None,
        hold_seconds: int | None = None,
    ) -> models.Authorization:
        """May the account run ``action`` now? Raises ``PaymentRequired`` (with the payments
        that would allow it in ``.required.accepts``) when not. With credits, the answer holds
        the cost: capture or release ``hold_id`` when done."""
        ask = models.AuthorizeRequest(
            account_id=account_id,
            action=action,
            cost=_dec(cost),
            cost_minor=cost_minor,
            currency=currency,
            agent_id=agent_id,
            hold_seconds=hold_seconds,
        )
        return self.send(Call("POST", "/v1/authorize", models.Authorization, _json(ask)))

    def can_continue(self, account_id: str, *, purpose: str | None = None) -> models.Continuation:
        """Whether the account's newest payment (for ``purpose``) allows it to go on; a
        ``allowed=False`` answer is returned, not raised."""
        return self.send(
            Call(
                "GET",
                f"/v1/accounts/{account_id}/can-continue",
                models.Continuation,
                params=_query(purpose=purpose),
                idempotent=True,
                ok=frozenset({402}),
            )
        )

    def get_hold(self, hold_id: uuid.UUID | str) -> models.HoldOut:
        return self.send(Call("GET", f"/v1/holds/{hold_id}", models.HoldOut, idempotent=True))

    def list_holds(
        self,
        *,
        account_id: str | None = None,
        status: models.HoldStatus | None = None,
        action: str | None = None,
        agent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> models.HoldPage:
        """One page of the account's holds, newest first; pass ``next_cursor`` back as
        ``cursor`` for the next."""
        params = _query(
            account_id=account_id,
            status=status,
            action=action,
            agent_id=agent_id,
            limit=limit,
            cursor=cursor,
        )
        return self.send(Call("GET", "/v1/holds", models.HoldPage, params=params, idempotent=True))

    def capture_hold(
        self,
        hold_id: uuid.UUID | str,
        *,
        amount: Amount | None = None,
        amount_minor: int | None = None,
    ) -> models.HoldOut:
        """Charge a hold: all of it, or ``amount`` (``amount_minor``) of it (the rest goes
        back)."""
        ask = models.CaptureRequest(amount=_dec(amount), amount_minor=amount_minor)
        return self.send(Call("POST", f"/v1/holds/{hold_id}/capture", models.HoldOut, _json(ask)))

    def release_hold(self, hold_id: uuid.UUID | str) -> models.HoldOut:
        """Give a hold back uncharged."""
        return self.send(Call("POST", f"/v1/holds/{hold_id}/release", models.HoldOut))

    def record_usage(self, events: Iterable[models.UsageEvent]) -> models.UsageReceipt:
        """Record up to 1000 usage events; each event is answered on its own (accepted,
        duplicate or rejected), and sending a batch again is harmless."""
        batch = [_json(event) for event in events]
        return self.send(
            Call("POST", "/v1/usage", models.UsageReceipt, {"events": batch}, idempotent=True)
        )

    # Payments

    def create_payment(
        self,
        amount: Amount | None,
        currency: str,
        *,
        amount_minor: int | None = None,
        purpose: str | None = None,
        description: str | None = None,
        payment_method: str | None = None,
        account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.PaymentCreated:
        """Create a Stripe PaymentIntent for ``amount`` (a decimal, "12.50"), or for
        ``amount_minor`` minor units with ``amount`` None. Purpose ``credits`` buys credits;
        an action's name pays for one run of it."""
        ask = models.PaymentCreate(
            amount=_dec(amount),
            amount_minor=amount_minor,
            currency=currency,
            purpose=purpose,
            description=description,
            payment_method=payment_method,
            account_id=account_id,
        )
        key = idempotency_key or str(uuid.uuid4())
        return self.send(
            Call(
                "POST",
                "/v1/payments",
                models.PaymentCreated,
                _json(ask),
                headers={"Idempotency-Key": key},
                idempotent=True,
            )
        )

    def get_payment(self, ref: uuid.UUID | str) -> models.Payment:
        """A payment by Tollgate id or Stripe PaymentIntent id."""
        return self.send(Call("GET", f"/v1/payments/{ref}", models.Payment, idempotent=True))

    def list_payments(
        self,
        *,
        account_id: str | None = None,
        status: models.PaymentStatus | None = None,
        purpose: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> models.PaymentPage:
        """One page of the account's payments, newest first; pass ``next_cursor`` back as
        ``cursor`` for the next."""
        params = _query(
            account_id=account_id, status=status, purpose=purpose, limit=limit, cursor=cursor
        )
        return self.send(
            Call("GET", "/v1/payments", models.PaymentPage, params=params, idempotent=True)
        )

    # Balances, transfers and transactions

    def balances(self, account_id: str | None = None) -> models.Balances:
        """The account's balances (this key's account when not given)."""
        account = account_id or self._own_account()
        return self.send(
            Call("GET", f"/v1/accounts/{account}/balances", models.Balances, idempotent=True)
        )

    def list_wallets(
        self, account_id: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> models.WalletPage:
        """The account's wallets (this key's account when not given), one per currency: the
        balance, what holds reserve (``held``) and what can still be spent (``available``)."""
        account = account_id or self._own_account()
        return self.send(
            Call(
                "GET",
                f"/v1/accounts/{account}/wallets",
                models.WalletPage,
                params=_query(limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def list_events(
        self,
        account_id: str | None = None,
        *,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> models.EventPage:
        """One page of the account's events (what ``tollgate listen`` delivers), newest
        first, of one ``type`` if given."""
        account = account_id or self._own_account()
        return self.send(
            Call(
                "GET",
                f"/v1/accounts/{account}/events",
                models.EventPage,
                params=_query(type=type, limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def list_keys(
        self, account_id: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> models.ApiKeyPage:
        """The account's API keys by id and prefix, oldest first (never the keys)."""
        account = account_id or self._own_account()
        return self.send(
            Call(
                "GET",
                f"/v1/accounts/{account}/keys",
                models.ApiKeyPage,
                params=_query(limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def transfer(
        self,
        to_account_id: str,
        amount: Amount | None,
        currency: str,
        *,
        amount_minor: int | None = None,
        from_account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transfer:
        """Move ``amount`` (a decimal, e.g. "12.50"; or ``amount_minor``) between two
        accounts' balances."""
        ask = models.TransferCreate(
            from_account_id=from_account_id,
            to_account_id=to_account_id,
            amount=_dec(amount),
            amount_minor=amount_minor,
            currency=currency,
        )
        key = idempotency_key or str(uuid.uuid4())
        return self.send(
            Call(
                "POST",
                "/v1/transfers",
                models.Transfer,
                _json(ask),
                headers={"Idempotency-Key": key},
                idempotent=True,
            )
        )

    def transfer_batch(
        self, transfers: Iterable[models.TransferCreate], *, idempotency_key: str | None = None
    ) -> models.TransferBatch:
        """Up to 1000 transfers in one call, all made (in order) or none: one refused transfer
        refuses the batch with its error, the message starting ``transfer N:`` (N from 1)."""
        ask = models.TransferBatchCreate(transfers=list(transfers))
        key = idempotency_key or str(uuid.uuid4())
        return self.send(
            Call(
                "POST",
                "/v1/transfers/batch",
                models.TransferBatch,
                _json(ask),
                headers={"Idempotency-Key": key},
                idempotent=True,
            )
        )

    def create_transaction(
        self,
        reference: str,
        amount: Amount | None,
        currency: str,
        *,
        amount_minor: int | None = None,
        account_id: str | None = None,
        payment_id: str | None = None,
    ) -> models.Transaction:
        """Record a pending transaction (``amount``, or ``amount_minor``); its reference is
        unique per account, so a retry is refused (409) rather than recorded twice."""
        ask = models.TransactionCreate(
            account_id=account_id,
            reference=reference,
            amount=_dec(amount),
            amount_minor=amount_minor,
            currency=currency,
            payment_id=payment_id,
        )
        return self.send(Call("POST", "/v1/transactions", models.Transaction, _json(ask)))

    def get_transaction(
        self, reference: str, *, account_id: str | None = None
    ) -> models.Transaction:
        return self.send(
            Call(
                "GET",
                f"/v1/transactions/{reference}",
                models.Transaction,
                params=_query(account_id=account_id),
                idempotent=True,
            )
        )

    def list_transactions(
        self,
        *,
        account_id: str | None = None,
        status: models.TransactionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        before: uuid.UUID | str | None = None,
    ) -> models.TransactionPage:
        """One page, newest first; pass ``next_cursor`` back as ``cursor`` for the next (or,
        as before cursors, ``next_before`` as ``before``)."""
        params = _query(
            account_id=account_id, status=status, limit=limit, cursor=cursor, before=before
        )
        return self.send(
            Call("GET", "/v1/transactions", models.TransactionPage, params=params, idempotent=True)
        )

    def iter_transactions(
        self,
        *,
        account_id: str | None = None,
        status: models.TransactionStatus | None = None,
        page_size: int = 200,
    ) -> Iterator[models.Transaction]:
        """Every transaction, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list_transactions(
                account_id=account_id, status=status, limit=page_size, cursor=cursor
            )
            yield from page.transactions
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def settle_transaction(
        self, reference: str, *, account_id: str | None = None
    ) -> models.Transaction:
        return self._move(reference, "settle", account_id)

    def fail_transaction(
        self, reference: str, *, account_id: str | None = None
    ) -> models.Transaction:
        return self._move(reference, "fail", account_id)

    def reverse_transaction(
        self, reference: str, *, account_id: str | None = None
    ) -> models.Transaction:
        return self._move(reference, "reverse", account_id)

    def _move(self, reference: str, to: str, account_id: str | None) -> models.Transaction:
        return self.send(
            Call(
                "POST",
                f"/v1/transactions/{reference}/{to}",
                models.Transaction,
                params=_query(account_id=account_id),
            )
        )

    # Usage report and settings (admin keys)

    def usage_report(
        self,
        account_id: str,
        *,
        metric: str | None = None,
        period: Literal["day", "month"] = "day",
        start: str | None = None,
        end: str | None = None,
    ) -> models.UsageReport:
        params = _query(metric=metric, period=period, **{"from": start, "to": end})
        return self.send(
            Call(
                "GET",
                f"/v1/accounts/{account_id}/usage",
                models.UsageReport,
                params=params,
                idempotent=True,
            )
        )

    def list_actions(self, *, limit: int = 50, cursor: str | None = None) -> models.ActionPage:
        """Every priced action, by name."""
        return self.send(
            Call(
                "GET",
                "/v1/actions",
                models.ActionPage,
                params=_query(limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def list_metric_prices(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> models.MetricPricePage:
        """Every metered metric with a price, by name."""
        return self.send(
            Call(
                "GET",
                "/v1/metrics",
                models.MetricPricePage,
                params=_query(limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def list_spend_caps(
        self, account_id: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> models.SpendCapPage:
        """The account's spend caps (this key's account when not given)."""
        account = account_id or self._own_account()
        return self.send(
            Call(
                "GET",
                f"/v1/accounts/{account}/spend-caps",
                models.SpendCapPage,
                params=_query(limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def set_action_price(
        self,
        action: str,
        price: Amount | None,
        currency: str,
        *,
        price_minor: int | None = None,
        description: str | None = None,
    ) -> models.ActionPriceOut:
        ask = models.ActionPriceIn(
            price=_dec(price), price_minor=price_minor, currency=currency, description=description
        )
        return self.send(
            Call("PUT", f"/v1/actions/{action}", models.ActionPriceOut, _json(ask), idempotent=True)
        )

    def set_metric_price(
        self, metric: str, unit_price: Amount, currency: str
    ) -> models.MetricPriceOut:
        ask = models.MetricPriceIn(unit_price=Decimal(unit_price), currency=currency)
        return self.send(
            Call("PUT", f"/v1/metrics/{metric}", models.MetricPriceOut, _json(ask), idempotent=True)
        )

    def set_spend_cap(
        self,
        account_id: str,
        period: Literal["day", "month"],
        currency: str,
        hard_limit: Amount | None,
        *,
        hard_limit_minor: int | None = None,
        agent_id: str | None = None,
        soft_pct: int = 80,
    ) -> models.SpendCapOut:
        ask = models.SpendCapIn(
            agent_id=agent_id,
            period=period,
            currency=currency,
            hard_limit=_dec(hard_limit),
            hard_limit_minor=hard_limit_minor,
            soft_pct=soft_pct,
        )
        return self.send(
            Call(
                "PUT",
                f"/v1/accounts/{account_id}/spend-caps",
                models.SpendCapOut,
                _json(ask),
                idempotent=True,
            )
        )

    def set_wallet(
        self,
        account_id: str,
        currency: str,
        *,
        allow_negative: bool | None = None,
        low_balance: Amount | None = None,
        low_balance_minor: int | None = None,
        overdraft_limit: Amount | None = None,
        overdraft_limit_minor: int | None = None,
    ) -> models.WalletOut:
        given = {
            "allow_negative": allow_negative,
            "low_balance": _dec(low_balance),
            "low_balance_minor": low_balance_minor,
            "overdraft_limit": _dec(overdraft_limit),
            "overdraft_limit_minor": overdraft_limit_minor,
        }
        ask = models.WalletIn.model_validate({k: v for k, v in given.items() if v is not None})
        return self.send(
            Call(
                "PUT",
                f"/v1/accounts/{account_id}/wallets/{currency}",
                models.WalletOut,
                _json(ask),
                idempotent=True,
            )
        )

    # Risk reviews and reconciliation (admin keys)

    def list_reviews(
        self, status: Literal["open", "approved", "rejected"] = "open"
    ) -> list[models.ReviewOut]:
        return self.send(
            Call(
                "GET",
                "/v1/reviews",
                list[models.ReviewOut],
                params={"status": status},
                idempotent=True,
            )
        )

    def approve_review(
        self, review_id: uuid.UUID | str, *, note: str | None = None
    ) -> models.ReviewOut:
        return self._decide(review_id, "approve", note)

    def reject_review(
        self, review_id: uuid.UUID | str, *, note: str | None = None
    ) -> models.ReviewOut:
        return self._decide(review_id, "reject", note)

    def _decide(
        self, review_id: uuid.UUID | str, decision: str, note: str | None
    ) -> models.ReviewOut:
        ask = models.DecisionIn(note=note)
        return self.send(
            Call("POST", f"/v1/reviews/{review_id}/{decision}", models.ReviewOut, _json(ask))
        )

    def list_risk_rules(
        self, *, account_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> models.RiskRulePage:
        """Admin keys: the review thresholds (one account's own, with ``account_id``)."""
        return self.send(
            Call(
                "GET",
                "/v1/risk-rules",
                models.RiskRulePage,
                params=_query(account_id=account_id, limit=limit, cursor=cursor),
                idempotent=True,
            )
        )

    def set_risk_rule(
        self,
        currency: str,
        *,
        account_id: str | None = None,
        max_amount: Amount | None = None,
        max_amount_minor: int | None = None,
        velocity_count: int | None = None,
        velocity_seconds: int | None = None,
        first_amount_max: Amount | None = None,
        first_amount_max_minor: int | None = None,
    ) -> models.RiskRuleOut:
        ask = models.RiskRuleIn(
            max_amount=_dec(max_amount),
            max_amount_minor=max_amount_minor,
            velocity_count=velocity_count,
            velocity_seconds=velocity_seconds,
            first_amount_max=_dec(first_amount_max),
            first_amount_max_minor=first_amount_max_minor,
        )
        return self.send(
            Call(
                "PUT",
                f"/v1/risk-rules/{currency}",
                models.RiskRuleOut,
                _json(ask),
                params=_query(account_id=account_id),
                idempotent=True,
            )
        )

    def import_reconciliation_lines(
        self, source: str, lines: Iterable[models.ReconciliationLineIn | Mapping[str, Any]]
    ) -> models.ReconciliationOut:
        """Match an outside statement's lines against Tollgate's transactions."""
        ask = models.ReconciliationIn(
            source=source,
            lines=[models.ReconciliationLineIn.model_validate(line) for line in lines],
        )
        return self.send(
            Call("POST", "/v1/reconciliation/lines", models.ReconciliationOut, _json(ask))
        )
