"""``GET /payments`` against the real PostgreSQL, fed by a real worker on Apache Kafka.

Payments go through the whole pipeline (simulator → saga → sink); a few more rows are
written straight into payment_states with chosen created_at values, to pin down the edges
of keyset pagination (ties across page boundaries, microsecond neighbours, the since / until
boundaries). The database is shared by the whole test session: every query filters on ids
unique to this run.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from orchestrator_app.dev.procs import free_port
from orchestrator_app.domain import codec
from orchestrator_app.web.listing import encode_cursor
from tests.kafka_util import produce
from tests.saga_util import created_event
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

FINAL_VERSION = {"COMPLETED": 5, "REJECTED": 3}
ITEM_KEYS = {"payment_id", "current_state", "previous_state", "amount", "currency",
             "customer_id", "merchant_id", "metadata", "version", "created_at", "updated_at"}
ORDER = "ORDER BY created_at DESC, payment_id DESC"
#: The listing needs a bearer token; a read-only one is enough.
READ_TOKEN = "listing-read-token-0123456789"
COMMAND_TOKEN = "listing-command-token-0123456789"
AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}


def get_json(worker: WorkerProcess, params: dict[str, str] | list[tuple[str, str]],
             path: str = "/payments", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, body = worker.get(f"{path}?{urlencode(params)}" if params else path,
                              headers=AUTH if headers is None else headers)
    return status, codec.loads(body)


def page_through(worker: WorkerProcess, params: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Follow next_cursor from the first page until it is null; return the pages."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        status, body = get_json(worker, {**params, **({"cursor": cursor} if cursor else {})})
        assert status == 200, body
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "next_cursor never became null"


async def expected_ids(conn: asyncpg.Connection, where: str, *args: Any) -> list[str]:
    rows = await conn.fetch(f"SELECT payment_id FROM payment_states WHERE {where} {ORDER}",
                            *args)
    return [r["payment_id"] for r in rows]


def assert_paged(pages: list[list[dict[str, Any]]], expected: list[str], limit: int) -> None:
    """Every row exactly once, in order, full pages except possibly the last."""
    ids = [item["payment_id"] for page in pages for item in page]
    assert ids == expected
    assert len(set(ids)) == len(ids)
    assert all(len(page) == limit for page in pages[:-1]), [len(p) for p in pages]
    assert 1 <= len(pages[-1]) <= limit or (expected == [] and pages == [[]])


async def insert_rows(conn: asyncpg.Connection, rows: list[tuple[str, str, str, datetime]]
                      ) -> None:
    """(payment_id, customer_id, state, created_at) straight into payment_states."""
    await conn.executemany(
        "INSERT INTO payment_states (payment_id, current_state, previous_state, amount,"
        " currency, customer_id, merchant_id, metadata, version, created_at, updated_at)"
        " VALUES ($1, $3, 'FRAUD_CHECK', 12.3400, 'EUR', $2, 'm-direct', '{\"n\": 1.50}',"
        " 3, $4, $4)",
        rows,
    )


async def test_listing_pages_filters_and_refusals(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    run = uuid.uuid4().hex[:8]
    customer, fraudster = f"lst-{run}", f"fraud-lst-{run}"
    merchant_a, merchant_b = f"m-lst-{run}-a", f"m-lst-{run}-b"
    env = worker_env(kafka_brokers, API_READ_TOKEN=READ_TOKEN)
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()

    # 1. 25 payments through the real pipeline: 17 → COMPLETED, 8 → REJECTED.
    payments: dict[str, dict[str, Any]] = {}
    for i in range(25):
        rejected = i % 3 == 2
        payments[f"lst-{run}-p{i:02d}"] = {
            "customer_id": fraudster if rejected else customer,
            "merchant_id": merchant_a if i % 2 else merchant_b,
            "amount": Decimal(f"{i + 1}.{i:02d}"),
            "state": "REJECTED" if rejected else "COMPLETED",
        }
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created", [
        (pid.encode(), created_event(pid, p["amount"], p["customer_id"], p["merchant_id"]))
        for pid, p in payments.items()
    ])

    conn = await asyncpg.connect(migrated_database_url)
    try:
        # 2. Wait until the sink has written every final state.
        started = time.monotonic()
        while True:
            rows = await conn.fetch(
                "SELECT payment_id, current_state, version FROM payment_states"
                " WHERE payment_id = ANY($1::varchar[])", list(payments))
            done = {r["payment_id"] for r in rows
                    if r["current_state"] == payments[r["payment_id"]]["state"]
                    and r["version"] == FINAL_VERSION[r["current_state"]]}
            if len(done) == len(payments):
                break
            assert time.monotonic() - started < 90, (
                f"sink wrote {len(done)} of {len(payments)} final states\n{worker.log_tail()}")
            await asyncio.sleep(0.3)
        print(f"\n25 payments settled and sunk in {time.monotonic() - started:.1f}s")

        # 3. Rows with chosen created_at for the same customer: six that tie exactly (they
        #    straddle page boundaries at limit=4), microsecond neighbours (a cursor cut to
        #    milliseconds would skip or repeat them), and rows on the since/until edges.
        tie = datetime(2001, 2, 3, 4, 5, 6, 789123, tzinfo=UTC)
        since, until = datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 1, 2, tzinfo=UTC)
        direct = (
            [(f"lst-{run}-tie-{c}", customer, "MANUAL_REVIEW", tie) for c in "fbdaec"]
            + [(f"lst-{run}-us-{k}", customer, "MANUAL_REVIEW", tie + timedelta(microseconds=k))
               for k in (1, 2, 3)]
            + [(f"lst-{run}-at-since", customer, "APPROVED", since),
               (f"lst-{run}-in-range", customer, "APPROVED", since + timedelta(hours=5)),
               (f"lst-{run}-at-until", customer, "APPROVED", until),
               (f"lst-{run}-before", customer, "APPROVED", since - timedelta(microseconds=1))]
        )
        await insert_rows(conn, direct)

        # 4. Page through one customer, 4 at a time: every row exactly once, in order.
        mine = await expected_ids(conn, "customer_id = $1", customer)
        assert len(mine) == 17 + len(direct)
        pages = page_through(worker, {"customer_id": customer, "limit": "4"})
        assert_paged(pages, mine, 4)
        assert len(pages) == (len(mine) + 3) // 4
        items = [item for page in pages for item in page]
        # (The id order within equal created_at is the database collation's: checked above
        # against SQL; the API shows created_at to the millisecond.)
        stamps = [i["created_at"] for i in items]
        assert stamps == sorted(stamps, reverse=True)
        ties = [i["payment_id"] for i in items if i["payment_id"].startswith(f"lst-{run}-tie-")]
        assert ties == sorted(ties, reverse=True)  # plain ASCII ids: any collation agrees

        # Items carry the API's shapes: exact decimals, ISO 8601 UTC with a Z.
        by_id = {i["payment_id"]: i for i in items}
        for pid, p in payments.items():
            if p["customer_id"] != customer:
                continue
            item = by_id[pid]
            assert set(item) == ITEM_KEYS
            assert (item["current_state"], item["previous_state"], item["version"]) == (
                "COMPLETED", "PROCESSING", 5)
            assert isinstance(item["amount"], Decimal) and item["amount"] == p["amount"]
            assert (item["currency"], item["merchant_id"]) == ("USD", p["merchant_id"])
            assert {"completion_timestamp", "confirmation_id"} <= set(item["metadata"])
            assert item["created_at"].endswith("Z") and item["updated_at"].endswith("Z")
            assert item["created_at"] <= item["updated_at"]
        tied = by_id[f"lst-{run}-tie-a"]
        assert tied["created_at"] == "2001-02-03T04:05:06.789Z"
        assert str(tied["amount"]) == "12.3400" and str(tied["metadata"]["n"]) == "1.50"

        # Other page sizes agree, down to 1 and up to the whole set in one page.
        for limit in (1, 7, 200):
            assert_paged(page_through(worker, {"customer_id": customer, "limit": str(limit)}),
                         mine, limit)

        # 5. Filters, each against the same question asked in SQL.
        for merchant in (merchant_a, merchant_b):
            expected = await expected_ids(conn, "merchant_id = $1", merchant)
            assert sorted(expected) == sorted(
                pid for pid, p in payments.items() if p["merchant_id"] == merchant)
            assert_paged(page_through(worker, {"merchant_id": merchant, "limit": "4"}),
                         expected, 4)
        rejected = await expected_ids(conn, "merchant_id = $1 AND current_state = 'REJECTED'",
                                      merchant_a)
        assert rejected and all(payments[pid]["state"] == "REJECTED" for pid in rejected)
        pages = page_through(worker, {"merchant_id": merchant_a, "state": "REJECTED",
                                      "limit": "2"})
        assert_paged(pages, rejected, 2)
        assert {i["current_state"] for page in pages for i in page} == {"REJECTED"}
        assert_paged(page_through(worker, {"customer_id": fraudster, "limit": "3"}),
                     await expected_ids(conn, "customer_id = $1", fraudster), 3)
        assert_paged(page_through(worker, {"customer_id": customer, "state": "COMPLETED"}),
                     [pid for pid in mine if pid.startswith(f"lst-{run}-p")], 50)
        # since is inclusive, until exclusive.
        window = {"customer_id": customer, "since": "2001-01-01T00:00:00Z",
                  "until": "2001-01-02T01:00:00+01:00"}  # the same instant as `until`
        assert [i["payment_id"] for page in page_through(worker, window) for i in page] == [
            f"lst-{run}-in-range", f"lst-{run}-at-since"]
        assert [i["payment_id"] for page in page_through(
            worker, {"customer_id": customer, "until": "2001-01-01T00:00:00Z"}) for i in page
        ] == [f"lst-{run}-before"]
        recent = page_through(worker, {"customer_id": customer, "since": "2002-01-01T00:00:00Z",
                                       "limit": "5"})
        assert_paged(recent, await expected_ids(
            conn, "customer_id = $1 AND created_at >= '2002-01-01'", customer), 5)
        assert len([i for page in recent for i in page]) == 17
        # Nothing matches: one empty page, no cursor.
        assert get_json(worker, {"customer_id": f"nobody-{run}"}) == (
            200, {"items": [], "next_cursor": None})
        # A page that is exactly full has no next page (limit+1 was fetched to know).
        status, body = get_json(worker, {"customer_id": customer, "limit": str(len(mine))})
        assert status == 200 and len(body["items"]) == len(mine) and body["next_cursor"] is None
        # A cursor is only a position: the listing goes on with the rows after it.
        status, body = get_json(worker, {"customer_id": customer, "limit": "1",
                                         "cursor": encode_cursor(tie, f"lst-{run}-tie-c")})
        assert status == 200 and [i["payment_id"] for i in body["items"]] == [
            f"lst-{run}-tie-b"]
    finally:
        await conn.close()

    # 6. Refusals: 400 with a JSON reason naming the parameter.
    first = get_json(worker, {"customer_id": customer, "limit": "4"})[1]["next_cursor"]
    bad: list[tuple[dict[str, str] | list[tuple[str, str]], str]] = [
        ({"state": "DONE"}, "state must be one of NEW, "),
        ({"state": ""}, "state must be one of NEW, "),
        ({"customer_id": ""}, "customer_id must not be empty"),
        ({"merchant_id": "m" * 256}, "merchant_id is 256 characters; at most 255"),
        ({"since": "yesterday"}, "since must be an ISO 8601 timestamp with a time zone"),
        ({"until": "2026-11-27T10:00:00"}, "until needs a time zone"),
        ({"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"},
         "since (2026-11-28T00:00:00Z) must not be later than until"),
        ({"limit": "0"}, "limit must be an integer from 1 to 200; got '0'"),
        ({"limit": "201"}, "limit must be an integer from 1 to 200; got '201'"),
        ({"limit": "abc"}, "limit must be an integer from 1 to 200; got 'abc'"),
        ({"cursor": first[:-2]}, "cursor is invalid (altered or truncated)"),
        ({"cursor": first[:8] + ("A" if first[8] != "A" else "B") + first[9:]},
         "cursor is invalid (altered or truncated)"),
        ({"cursor": "!!not-base64!!"}, "cursor is invalid (altered or truncated)"),
        ({"cursor": ""}, "cursor must not be empty"),
        ({"page": "2", "customer_id": customer}, "unknown parameter(s): 'page'"),
        ([("state", "NEW"), ("state", "REJECTED")], "parameter(s) given more than once: state"),
    ]
    for params, message in bad:
        status, body = get_json(worker, params)
        assert status == 400, (params, status, body)
        assert body["error"] == "invalid_parameter", body
        assert body["message"].startswith(message), (params, body)
    # An unencoded '+' in an offset arrives as a space: the reason says so.
    status, body = get_json(worker, {}, path="/payments?since=2026-11-27T10:00:00+01:00")
    assert status == 400 and "%2B" in body["message"], body


async def test_listing_answers_503_while_the_database_is_unreachable(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    dead = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nothing"
    worker = spawn_worker(worker_env(kafka_brokers, DATABASE_URL=dead,
                                     API_READ_TOKEN=READ_TOKEN))
    worker.wait_healthy()
    for _ in range(2):  # the pool is reset after a failure and the next request retries
        status, body = get_json(worker, {"limit": "5"})
        assert status == 503, body
        assert body["error"] == "unavailable" and "retry" in body["message"]
        assert "secret" not in str(body)
    # Parameters are still checked first: a bad one is a 400 whatever the database does.
    assert get_json(worker, {"limit": "0"})[0] == 400


async def test_listing_needs_a_token_and_limits_failed_attempts(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    worker = spawn_worker(worker_env(
        kafka_brokers, API_READ_TOKEN=READ_TOKEN, API_TOKEN=COMMAND_TOKEN,
        API_AUTH_FAILURES_PER_MINUTE="3", API_RATE_LIMIT_PER_MINUTE="1000"))
    worker.wait_healthy()
    # The counts live in fixed one-minute windows: start early in one, so all of this test's
    # failures fall into the same window.
    if time.time() % 60 > 40:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    status, body = get_json(worker, {"limit": "1"}, headers={})
    assert status == 401 and body["error"] == "unauthorized", body
    # Both scopes read; a read token may not send commands.
    for token in (READ_TOKEN, COMMAND_TOKEN):
        status, body = get_json(worker, {"limit": "1"},
                                headers={"Authorization": f"Bearer {token}"})
        assert status == 200, body
    request = urllib.request.Request(worker.url("/payments/p-1/refund"), method="POST",
                                     data=b"{}", headers=AUTH)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 403
    # The missing token and the refused command were failures 1 and 2 of 3 this minute; one
    # more wrong token, then even a good one is refused from this address for the window.
    status, _ = get_json(worker, {}, headers={"Authorization": "Bearer wrong-token-xyz"})
    assert status == 403
    status, body = get_json(worker, {"limit": "1"})
    assert status == 429 and body["error"] == "too_many_failures", body
