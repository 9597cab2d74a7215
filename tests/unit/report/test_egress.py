"""Job callbacks' egress policy (shared/egress.py): what a callback URL may reach.

Every check here is a refusal or an acceptance decided before any connection: addresses come
from literal URLs or from a stub resolver, and the sender's HTTP transport records requests
instead of sending them.  No test opens a connection to anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from services.report.callbacks import CallbackSender
from shared.egress import EgressPolicy, EgressRefused
from shared.settings import Settings

DEFAULT = EgressPolicy.from_settings(Settings())
LOCAL = EgressPolicy.from_settings(Settings(callback_allow_http=True, callback_allowed_networks="127.0.0.0/8,::1/128"))


def stub(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"[stub] {host} does not resolve")
        return table[host]
    return resolve


PUBLIC = stub({"hooks.example.com": ["93.184.215.14"], "v6.example.com": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})


def check(policy: EgressPolicy, url: str, resolve: Any = PUBLIC) -> list[str]:
    return asyncio.run(policy.check(url, resolve))


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "https://[fd00:ec2::254]/latest/meta-data/",  # the IPv6 metadata endpoint (unique local)
    "https://10.0.0.1/hook", "https://172.16.5.4/", "https://192.168.1.1/",  # private
    "https://127.0.0.1:8443/", "https://[::1]/", "https://[::ffff:127.0.0.1]/",  # loopback, also mapped
    "https://[fe80::1]/", "https://0.0.0.0/", "https://224.0.0.1/", "https://100.64.0.1/",  # link-local, ...
    "https://240.0.0.1/", "https://[ff02::1]/",  # reserved, multicast
])
def test_non_public_addresses_are_refused_by_default(url: str) -> None:
    with pytest.raises(EgressRefused, match="non-public address"):
        check(DEFAULT, url)


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    assert check(DEFAULT, "https://hooks.example.com/done") == ["93.184.215.14"]
    assert check(DEFAULT, "https://v6.example.com/done")
    # One private address among public ones (or a name re-pointed at the metadata endpoint): refused.
    for addresses in (["93.184.215.14", "10.1.2.3"], ["169.254.169.254"]):
        with pytest.raises(EgressRefused, match="resolves to"):
            check(DEFAULT, "https://hooks.example.com/done", stub({"hooks.example.com": addresses}))
    with pytest.raises(EgressRefused, match="does not resolve"):
        check(DEFAULT, "https://nowhere.example.com/")


@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.example.com/", "https only"),
    ("ftp://hooks.example.com/", "callbacks are https"),
    ("file:///etc/passwd", "callbacks are https"),
    ("https://user:pw@hooks.example.com/", "credentials"),
    ("https:///nohost", "no host"),
])
def test_scheme_credentials_and_host_are_checked_before_resolving(url: str, why: str) -> None:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        asked.append(host)
        return ["93.184.215.14"]

    with pytest.raises(EgressRefused, match=why):
        asyncio.run(DEFAULT.check(url, resolve))
    assert asked == []


def test_an_allow_list_admits_only_its_hosts_and_their_subdomains() -> None:
    policy = EgressPolicy.from_settings(Settings(callback_allowed_hosts="hooks.example.com, *.partner.example"))
    resolve = stub({"hooks.example.com": ["93.184.215.14"], "a.partner.example": ["93.184.215.15"],
                    "evil.example.com": ["93.184.215.16"]})
    assert check(policy, "https://hooks.example.com/x", resolve)
    assert check(policy, "https://a.partner.example/x", resolve)
    for url in ("https://evil.example.com/x", "https://partner.example.evil.com/x"):
        with pytest.raises(EgressRefused, match="not in callback_allowed_hosts"):
            check(policy, url, resolve)


def test_allowed_networks_and_http_open_loopback_for_the_local_demo_only() -> None:
    assert check(LOCAL, "http://127.0.0.1:9000/hook") == ["127.0.0.1"]
    assert check(LOCAL, "http://[::1]:9000/hook") == ["::1"]
    with pytest.raises(EgressRefused, match="non-public"):
        check(LOCAL, "http://169.254.169.254/")  # the metadata endpoint stays refused
    with pytest.raises(ValueError, match="callback_allowed_networks"):  # at start, naming the setting
        Settings(callback_allowed_networks="127.0.0.0/8,not-a-network")


def _recording(sent: list[httpx.Request], status: int) -> httpx.AsyncClient:
    """A client whose transport records requests and answers ``status``: nothing leaves the process."""
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(status)))


class _Pool:
    def __init__(self) -> None:
        self.states: list[str] = []

    async def execute(self, sql: str, job_id: str, state: str) -> None:
        self.states.append(state)


def test_the_sender_refuses_before_connecting_when_a_name_now_resolves_inward() -> None:
    """DNS rebinding: accepted at submission, the name resolves to the metadata endpoint at
    delivery.  The delivery is refused and recorded; the transport saw no request."""
    sent: list[httpx.Request] = []

    async def run() -> list[str]:
        pool = _Pool()
        sender = CallbackSender(pool, b"k", DEFAULT, attempts=3, base_delay_s=0.01,  # type: ignore[arg-type]
                                resolve=stub({"hooks.example.com": ["169.254.169.254"]}))
        await sender._client.aclose()
        sender._client = _recording(sent, 200)
        await sender._deliver("job-1", "https://hooks.example.com/done", b"{}")
        await sender.close()
        return pool.states

    states = asyncio.run(run())
    assert sent == []
    assert len(states) == 1 and states[0].startswith("refused: host hooks.example.com resolves to 169.254.169.254")


def test_the_sender_delivers_to_an_allowed_host() -> None:
    sent: list[httpx.Request] = []

    async def run() -> list[str]:
        pool = _Pool()
        sender = CallbackSender(pool, b"k", DEFAULT, resolve=PUBLIC)  # type: ignore[arg-type]
        await sender._client.aclose()
        sender._client = _recording(sent, 204)
        await sender._deliver("job-1", "https://hooks.example.com/done", b"{}")
        await sender.close()
        return pool.states

    assert asyncio.run(run()) == ["sent: HTTP 204"]
    assert [str(r.url) for r in sent] == ["https://hooks.example.com/done"]
