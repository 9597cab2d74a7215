"""What a running replica says of itself on its ops port (``/readyz``): halted, paused, not ready
(and why), or ready.  For ``fiscalflow stack status``: every replica is asked at once, each with a
short timeout, so a hung replica costs the command seconds, not minutes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

# Above the 2 s a replica's /readyz gives its own dependency check: a replica whose PostgreSQL
# hangs still answers, and says so.
PROBE_TIMEOUT_S = 2.5


def condition_of(body: dict[str, Any]) -> tuple[str, str]:
    """(condition, reason) from a /readyz body of a stage replica or of the report service."""
    cond = body.get("condition") or {}
    if body.get("halted"):
        return "halted", str(body["halted"])
    if cond.get("state"):
        return str(cond["state"]), str(cond.get("reason", ""))
    if body.get("ready"):
        return "ready", ""
    if body.get("dependencies") is False:
        return "not ready", f"a dependency is down ({body.get('last_error') or 'see the log'})"
    if body.get("api") is False:
        return "not ready", "its HTTP API is not serving yet"
    if "assigned" in body and not body["assigned"]:
        return "not ready", "no partition assigned (starting, rebalancing, or more replicas than partitions)"
    return "not ready", str(body.get("last_error") or "")


def probe(ops_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, str]:
    try:
        resp = httpx.get(f"{ops_url}/readyz", timeout=timeout_s)
        body = resp.json()
    except httpx.TimeoutException:
        return "no answer", f"/readyz did not answer within {timeout_s:g} s"
    except (httpx.HTTPError, ValueError) as exc:
        return "no answer", f"/readyz: {type(exc).__name__}: {exc}"
    return condition_of(body if isinstance(body, dict) else {})


def probe_all(ops_urls: list[str], timeout_s: float = PROBE_TIMEOUT_S) -> list[tuple[str, str]]:
    if not ops_urls:
        return []
    with ThreadPoolExecutor(min(16, len(ops_urls))) as pool:
        return list(pool.map(lambda url: probe(url, timeout_s), ops_urls))
