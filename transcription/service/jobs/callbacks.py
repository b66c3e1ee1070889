"""Job callbacks: which URLs a job may call back, and POSTing to them without reaching internal addresses.

A callback URL comes from whoever may submit jobs, and the server POSTs from inside the cluster, so an
unchecked URL lets a client make the server call cloud metadata endpoints, the pod network or localhost
(SSRF). Two checks: `check_callback_url` at submission (well-formed http(s), no literal internal address,
no known internal name), and `deliver` at send time, which resolves the host, refuses it if ANY address is
internal (DNS can change after submission), and then connects only to the addresses it vetted (pinned: a
second DNS answer cannot differ), with the URL's host kept for the Host header, TLS SNI and certificate
check. Redirects are never followed. `allow_internal` (SLOWER_WHISPER_CALLBACK_ALLOW_INTERNAL) lifts the
internal-address rule for receivers on the same host or network, never the others.

The stored outcome is coarse (delivered, failed with the HTTP status when the target answered, refused):
connect-error details would let a client map which hosts and ports exist. They go to the log only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
# Names that reach cloud metadata services or this host whatever DNS says about them.
INTERNAL_NAMES = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "kubernetes"}
)
INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain")  # .local: mDNS, cluster.local
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
# Spelt like an IPv4 address in some form inet_aton accepts (127.1, 2130706433, 0x7f.0.0.1).
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")
REDACTED = "***"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(ValueError):
    """The callback URL is malformed or leads to an internal address."""


class InternalAddress(CallbackRefused):
    pass


# ---------------------------------------------------------------- the URL


def check_callback_url(url: str, allow_internal: bool) -> str:
    """`url` if it may be a job's callback; else CallbackRefused saying why (for the 400 answer)."""
    if not isinstance(url, str) or not url:
        raise CallbackRefused("callback_url must be an absolute http(s) URL")
    if len(url) > MAX_URL_CHARS:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        # CR/LF would inject headers; parsers disagree on backslashes and spaces (which host is meant?).
        raise CallbackRefused("callback_url must not contain spaces, backslashes or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CallbackRefused("callback_url must be an absolute http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise CallbackRefused("callback_url has an invalid port (1-65535)") from None
    if port == 0 or parts.netloc.endswith(":"):
        raise CallbackRefused("callback_url has an invalid port (1-65535)")
    host = parts.hostname or ""
    if not host:
        raise CallbackRefused("callback_url has no host")
    address = literal_address(host)
    if address is None:
        _check_name(host)
    if not allow_internal:
        if address is not None and is_internal(address):
            raise InternalAddress(f"callback_url leads to an internal address ({address})")
        if address is None and is_internal_name(host):
            raise InternalAddress(f"callback_url names an internal host ({host})")
    return url


def _check_name(host: str) -> None:
    if "[" in host or "]" in host or "%" in host:
        raise CallbackRefused("callback_url has an invalid host")
    name = host[:-1] if host.endswith(".") else host
    try:
        ascii_name = name.encode("idna").decode("ascii")  # a non-ASCII (IDN) name as it goes to DNS
    except UnicodeError:
        raise CallbackRefused("callback_url has an invalid host name") from None
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in ascii_name.split(".")):
        raise CallbackRefused("callback_url has an invalid host name (labels of 1-63 characters, 253 in all)")


def literal_address(host: str) -> IPAddress | None:
    """The address a host that is an IP literal means, in any spelling the resolver accepts; else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, unique-local, multicast, unspecified, reserved, shared (CGNAT),
    documentation ranges, and IPv6 forms that carry such an IPv4 address (mapped, NAT64, 6to4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        if any(e is not None and is_internal(e) for e in embedded):
            return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def is_internal_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name in INTERNAL_NAMES or name.endswith(INTERNAL_SUFFIXES)


# ---------------------------------------------------------------- credentials in the URL


def has_userinfo(url: str | None) -> bool:
    return bool(url) and "@" in (urlsplit(url).netloc if url else "")


def redact(url: str | None) -> str | None:
    """`url` with its userinfo (`user:password@`) replaced by `***@`: what records and logs may show."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def is_redacted(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").netloc.startswith(f"{REDACTED}@")


# ---------------------------------------------------------------- sending


async def deliver(
    url: str, payload: dict[str, Any], *, allow_internal: bool, timeout: float
) -> dict[str, Any]:
    """POST `payload` as JSON to `url` and return the outcome to store with the job (never raises).

    `{"at", "result": "delivered", "status_code"}` for a 2xx answer; `"failed"` with `status_code` when the
    target answered otherwise (a redirect included: it is not followed), or with `"error": "no answer"`;
    `"refused"` with `"error"` when the URL is invalid or leads to an internal address.
    """
    outcome: dict[str, Any] = {"at": round(time.time(), 3)}
    shown = redact(url)
    try:
        check_callback_url(url, allow_internal)  # also for records accepted before this check existed
        target = httpx.URL(url)
        addresses = await asyncio.wait_for(_resolve(target.raw_host.decode("ascii"), target.port), timeout)
        if not allow_internal:
            internal = [a for a in addresses if is_internal(ipaddress.ip_address(a))]
            if internal:
                raise InternalAddress(f"{target.host} resolves to internal address(es) {', '.join(internal)}")
        transport = _PinnedTransport(addresses)
        async with httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False) as client:
            response = await client.post(url, json=payload)
    except InternalAddress as exc:
        log.warning("callback to %s refused: %s", shown, exc)
        return {**outcome, "result": "refused", "error": "internal address"}
    except (CallbackRefused, httpx.InvalidURL, UnicodeError) as exc:
        log.warning("callback to %s refused: %s", shown, exc)
        return {**outcome, "result": "refused", "error": "invalid URL"}
    except (OSError, asyncio.TimeoutError, httpx.HTTPError, httpcore.ConnectError) as exc:
        log.warning("callback to %s failed: %s: %s", shown, type(exc).__name__, exc)
        return {**outcome, "result": "failed", "error": "no answer"}
    ok = 200 <= response.status_code < 300
    log.info("callback to %s answered %s", shown, response.status_code)
    return {**outcome, "result": "delivered" if ok else "failed", "status_code": response.status_code}


async def _resolve(host: str, port: int | None) -> list[str]:
    """Every address `host` resolves to now (literals as they are), in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%")[0]
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    return addresses


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the vetted addresses whatever host httpcore asks for (TLS still names the URL's host)."""

    def __init__(self, addresses: list[str]) -> None:
        self._addresses = addresses
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in self._addresses:
            try:
                return await self._real.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError("no address to connect to")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("callbacks never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class _PinnedTransport(httpx.AsyncBaseTransport):
    """httpx's request building (Host, basic auth from userinfo, JSON) over a pool pinned to addresses.

    The answer's body is never read: only its status is recorded, and a hostile target could send a lot.
    """

    def __init__(self, addresses: list[str]) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(), network_backend=_PinnedBackend(addresses)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        )
        try:
            async with self._pool.stream(
                request.method,
                url,
                headers=request.headers.raw,
                content=request.content,
                extensions=request.extensions,
            ) as answer:
                return httpx.Response(answer.status, headers=answer.headers, request=request)
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc), request=request) from exc
        except httpcore.NetworkError as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc
        except httpcore.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        await self._pool.aclose()
