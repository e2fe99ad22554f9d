"""PostgreSQL access: the idempotent batch writer of the sink, and the payment listing.

Postgres is a sink, not the source of truth: a write may be repeated any number of times
(redelivery, retries after an outage) and must change nothing the second time. The listing
(``GET /payments``) reads what the sink has written, so it may lag the live state a moment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import faust

from orchestrator_app.domain import codec

__all__ = [
    "CONNECTION_ERRORS", "ListPage", "ListQuery", "PaymentStore", "StateRow",
    "accumulated_metadata",
]

log = logging.getLogger(__name__)

#: Errors that mean "the database is not reachable right now": retry later, lose nothing.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # "cannot switch to state …; another operation is in progress": a connection left
    # mid-protocol by a server that went away while we used it.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    TimeoutError,
)

_INSERT_HISTORY = """
INSERT INTO payment_state_history
    (payment_id, state, previous_state, version, event_id, metadata, created_at)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::int[], $5::varchar[],
                     $6::jsonb[], $7::timestamptz[])
ON CONFLICT (payment_id, version) DO NOTHING
"""

_UPSERT_STATES = """
INSERT INTO payment_states
    (payment_id, current_state, previous_state, amount, currency, customer_id, merchant_id,
     metadata, version, created_at, updated_at)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::numeric[],
                     $5::varchar[], $6::varchar[], $7::varchar[], $8::jsonb[], $9::int[],
                     $10::timestamptz[], $11::timestamptz[])
ON CONFLICT (payment_id) DO UPDATE SET
    current_state = EXCLUDED.current_state,
    previous_state = EXCLUDED.previous_state,
    metadata = COALESCE(payment_states.metadata, '{}'::jsonb) || EXCLUDED.metadata,
    version = EXCLUDED.version,
    updated_at = EXCLUDED.updated_at
WHERE payment_states.version < EXCLUDED.version
"""


def accumulated_metadata(rows: Sequence[StateRow]) -> dict[str, str]:
    """Per payment, the metadata (JSON text) that the ``payment_states`` row gains from
    `rows`: the metadata of its latest version and of the versions just before it (the run
    without a gap), merged in version order, later keys winning — as the live state
    accumulates it. The upsert appends it (``||``) to what the row holds, so the row's
    metadata is every state's keys. Versions behind a gap (an older event redelivered into
    the batch) are left out: the row already holds them, and re-applying them would let
    older values win."""
    by_payment: dict[str, dict[int, str]] = {}
    for row in rows:
        by_payment.setdefault(row.payment_id, {})[row.version] = row.metadata
    merged: dict[str, str] = {}
    for payment_id, versions in by_payment.items():
        latest = max(versions)
        if len(versions) == 1:
            merged[payment_id] = versions[latest]
            continue
        first = latest
        while first - 1 in versions:
            first -= 1
        folded: dict[str, Any] = {}
        for version in range(first, latest + 1):
            folded.update(codec.loads(versions[version]))
        merged[payment_id] = codec.dumps(folded).decode()
    return merged


#: Payments per state, group-wide: how many, the oldest last change, how many have not
#: changed for $1 seconds; and the settled outcomes of the payments created in the last $2
#: seconds (for the success rate).
_CENSUS = """
SELECT current_state, count(*) AS payments, min(updated_at) AS oldest_update,
       count(*) FILTER (WHERE updated_at < now() - make_interval(secs => $1)) AS stale,
       count(*) FILTER (WHERE created_at >= now() - make_interval(secs => $2)) AS recent,
       extract(epoch FROM now() - min(updated_at))::float8 AS oldest_age_seconds
FROM payment_states
GROUP BY current_state
"""

_LIST_COLUMNS = (
    "payment_id, current_state, previous_state, amount, currency, customer_id, merchant_id,"
    " metadata::text AS metadata, version, created_at, updated_at"
)


@dataclass(frozen=True)
class ListQuery:
    """A validated ``GET /payments`` query (built by `orchestrator_app.listing`).

    ``since`` is inclusive and ``until`` exclusive, both on ``created_at`` (time-zone aware);
    ``cursor`` is the (created_at, payment_id) of the last item of the previous page.
    """

    state: str | None = None
    customer_id: str | None = None
    merchant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: tuple[datetime, str] | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of ``payment_states`` rows (the columns of `list_sql`, as the database
    returns them: the web layer shapes them into JSON), and the keyset of the last row when
    more follow."""

    rows: list[Mapping[str, Any]]
    next_cursor: tuple[datetime, str] | None


def list_sql(query: ListQuery) -> tuple[str, list[Any]]:
    """The statement and its parameters: fixed SQL fragments, every value a $n parameter."""
    params: list[Any] = []
    where: list[str] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if query.state is not None:
        where.append(f"current_state = {param(query.state)}")
    if query.customer_id is not None:
        where.append(f"customer_id = {param(query.customer_id)}")
    if query.merchant_id is not None:
        where.append(f"merchant_id = {param(query.merchant_id)}")
    if query.since is not None:
        where.append(f"created_at >= {param(query.since)}")
    if query.until is not None:
        where.append(f"created_at < {param(query.until)}")
    if query.cursor is not None:
        created_at, payment_id = query.cursor
        where.append(f"(created_at, payment_id) < ({param(created_at)}, {param(payment_id)})")
    sql = f"SELECT {_LIST_COLUMNS} FROM payment_states"
    if where:
        sql += " WHERE " + " AND ".join(where)
    # One more row than asked: its presence says whether a next page exists.
    sql += f" ORDER BY created_at DESC, payment_id DESC LIMIT {param(query.limit + 1)}"
    return sql, params


@dataclass(frozen=True)
class StateRow:
    """One ``payment.state.changed`` event, decoded for the database."""

    payment_id: str
    current_state: str
    previous_state: str | None
    amount: Decimal
    currency: str
    customer_id: str
    merchant_id: str
    metadata: str  # JSON text, exact decimals
    version: int
    event_id: str
    changed_at: datetime

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> StateRow:
        return cls(
            payment_id=event["payment_id"],
            current_state=event["current_state"],
            previous_state=event.get("previous_state"),
            amount=Decimal(event["amount"]),
            currency=event["currency"],
            customer_id=event["customer_id"],
            merchant_id=event["merchant_id"],
            metadata=codec.dumps(event.get("metadata") or {}).decode(),
            version=int(event["version"]),
            event_id=event["event_id"],
            changed_at=datetime.fromisoformat(event["changed_at"]),
        )


class PaymentStore(faust.Service):
    """A lazily created connection pool: a database that is down at start-up is fine."""

    def __init__(self, url: str, max_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._url = url
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=self._max_size, timeout=5,
                command_timeout=30,
            )
        return self._pool

    async def on_stop(self) -> None:
        await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def reset(self) -> None:
        """Drop the pool after a connection error; the next call reconnects."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def write_batch(self, rows: Sequence[StateRow]) -> None:
        """Append history and advance latest states in one transaction. Idempotent."""
        if not rows:
            return
        latest: dict[str, StateRow] = {}
        first_seen: dict[str, datetime] = {}
        for row in rows:
            current = latest.get(row.payment_id)
            if current is None or row.version > current.version:
                latest[row.payment_id] = row
            seen = first_seen.get(row.payment_id)
            if seen is None or row.changed_at < seen:
                first_seen[row.payment_id] = row.changed_at
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _INSERT_HISTORY,
                [r.payment_id for r in rows],
                [r.current_state for r in rows],
                [r.previous_state for r in rows],
                [r.version for r in rows],
                [r.event_id for r in rows],
                [r.metadata for r in rows],
                [r.changed_at for r in rows],
            )
            states = list(latest.values())
            metadata = accumulated_metadata(rows)
            await conn.execute(
                _UPSERT_STATES,
                [r.payment_id for r in states],
                [r.current_state for r in states],
                [r.previous_state for r in states],
                [r.amount for r in states],
                [r.currency for r in states],
                [r.customer_id for r in states],
                [r.merchant_id for r in states],
                [metadata[r.payment_id] for r in states],
                [r.version for r in states],
                [first_seen[r.payment_id] for r in states],
                [r.changed_at for r in states],
            )

    async def state_census(self, stale_after: float, recent_window: float) -> list[Any]:
        """Rows of `_CENSUS`: per state, ``payments``, ``oldest_update``,
        ``oldest_age_seconds`` (the database's clock), ``stale`` (unchanged for
        `stale_after` seconds) and ``recent`` (created in the last `recent_window` seconds)."""
        pool = await self.pool()
        async with pool.acquire(timeout=5) as conn:
            return list(await conn.fetch(_CENSUS, float(stale_after), float(recent_window),
                                         timeout=10))

    async def list_payments(self, query: ListQuery) -> ListPage:
        """One page of payments, newest first (keyset pagination: no OFFSET)."""
        sql, params = list_sql(query)
        pool = await self.pool()
        # Bounded waits: the sink shares this pool, and an HTTP client should get a 503
        # rather than hang behind it.
        async with pool.acquire(timeout=5) as conn:
            rows = await conn.fetch(sql, *params, timeout=10)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_cursor = (rows[-1]["created_at"], rows[-1]["payment_id"]) if more else None
        return ListPage(list(rows), next_cursor)
