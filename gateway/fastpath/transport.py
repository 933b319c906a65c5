"""Upstream HTTP for the provider adapters: httpx's API over an aiohttp connection pool.

httpx's own transport was the biggest CPU cost of the gateway's hot path: with 64 concurrent
POSTs to a local mock, `httpx.AsyncClient` spent 0.85 ms of CPU per request (httpcore's pool
scan and its anyio layers), raw aiohttp 0.06 ms, and `httpx.AsyncClient` over this transport
0.17 ms. The adapters no longer call the client's `post` or `send`: `ProviderAdapter._send`
(gateway/providers/base.py) builds an `httpx.Request` and hands it straight to the
transport the client picks for its URL (`client._transport_for_url`, an httpx internal),
which skips the client's header merging, cookies, auth flows and redirects; the body is
then read with `Response.aiter_bytes` (`_read_capped`, and `base.sse` for streams), and
errors are httpx's exceptions (`_httpx_error`). So this class must behave as an httpx
transport on its own, and tests can still inject `httpx.MockTransport` in its place.

What it does not do, because the gateway does not need it: HTTP/2, a write timeout (aiohttp
has none; a request body is small and goes out with the headers), and streaming a request
body (an unread request stream is read into memory first).
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator
from functools import cache

import aiohttp
import httpx
from yarl import URL

from gateway import fastpath

__all__ = ["AiohttpTransport", "send"]

# The request headers are httpx's, complete (Host, Content-Length, User-Agent, Accept, ...):
# aiohttp must add none of its own. It never adds Host or Content-Length when they are given.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@cache
def _ssl_context() -> ssl.SSLContext:
    """The context httpx would use (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    return httpx.create_ssl_context()


class _EnvProxies:
    """HTTP(S)_PROXY / NO_PROXY from the environment, read once like httpx's client does.

    Not aiohttp's `trust_env=True`: that reads the environment and parses ~/.netrc again on
    every request, in two executor threads, and fills in Basic auth from ~/.netrc, which
    aiohttp then refuses to combine with the provider's own Authorization header.
    """

    __slots__ = ("proxies", "bypassed")

    def __init__(self) -> None:
        self.proxies = {  # aiohttp speaks to HTTP proxies only (no SOCKS)
            scheme: URL(url)
            for scheme, url in urllib.request.getproxies().items()
            if scheme in ("http", "https", "all") and url.startswith(("http://", "https://"))
        }
        self.bypassed: dict[str, bool] = {}

    def for_url(self, url: httpx.URL) -> URL | None:
        if not self.proxies:
            return None
        proxy = self.proxies.get(url.scheme) or self.proxies.get("all")
        if proxy is None:
            return None
        host = url.host
        bypassed = self.bypassed.get(host)
        if bypassed is None:
            if len(self.bypassed) > 1024:
                self.bypassed.clear()
            bypassed = self.bypassed[host] = bool(urllib.request.proxy_bypass(host))
        return None if bypassed else proxy


def _client_timeout(
    cache: dict[tuple, aiohttp.ClientTimeout], timeout: dict[str, float | None] | None
) -> aiohttp.ClientTimeout:
    """httpx's per-request timeout dict as aiohttp's: `connect` covers the wait for a pooled
    connection plus the connect itself, `sock_read` is the longest silence while reading."""
    timeout = timeout or {}
    pool, connect, read = timeout.get("pool"), timeout.get("connect"), timeout.get("read")
    key = (pool, connect, read)
    found = cache.get(key)
    if found is None:
        if len(cache) > 256:
            cache.clear()
        found = cache[key] = aiohttp.ClientTimeout(
            total=None,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
    return found


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or socket) failure, as httpx's transport raises."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        cls: type[httpx.TransportError] = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):  # ServerTimeoutError, SocketTimeoutError (sock_read)
        cls = httpx.ReadTimeout
    elif isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        cls = httpx.ProxyError
    elif isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerFingerprintMismatch)):
        cls = httpx.ConnectError  # refused, unreachable, DNS, TLS handshake
    elif isinstance(
        exc,
        (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError),
    ):
        cls = httpx.RemoteProtocolError  # closed early, cut body, unparseable answer
    elif isinstance(exc, aiohttp.InvalidURL):
        cls = httpx.UnsupportedProtocol
    elif isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        cls = httpx.ReadError  # reset by peer, closed while sending, "Connection closed"
    else:
        cls = httpx.TransportError
    return cls(message, request=request)


class _ResponseStream(httpx.AsyncByteStream):
    """The body as aiohttp receives it: each chunk is passed on as soon as it arrives."""

    __slots__ = ("_response", "_request")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # unread body: the connection cannot be reused


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport sending through one aiohttp session (created inside the running
    loop on first use; the transport belongs to that loop, like the client around it)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: _EnvProxies | None = None
        self._timeouts: dict[tuple, aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=2000, limit_per_host=0, keepalive_timeout=30, ssl=_ssl_context()
        )
        self._proxies = _EnvProxies()
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes Content-Encoding itself
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx's client keeps the cookies
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{request.url.scheme}://'.",
                request=request,
            )
        session = self._session
        if session is None or session.closed:
            session = self._open()
        raw_headers = request.headers.raw
        try:  # aiohttp writes header strings as UTF-8: these give back httpx's exact bytes
            headers = [(k.decode(), v.decode()) for k, v in raw_headers]
        except UnicodeDecodeError:  # not UTF-8: sent as UTF-8 of their latin-1 reading
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers]
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
            # Sent whole, with the Content-Length aiohttp adds, instead of chunked.
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        assert self._proxies is not None
        try:
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,  # httpx's client follows redirects, if asked to
                timeout=_client_timeout(self._timeouts, request.extensions.get("timeout")),
                proxy=self._proxies.for_url(request.url),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise _httpx_error(exc, request) from exc
        version = response.version
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            extensions={
                "http_version": b"HTTP/%d.%d" % (version.major, version.minor)
                if version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


async def send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send `request` on `client`, its body left unread (the caller streams or reads it).

    Fast path: straight to the transport the client picks for the URL
    (`client._transport_for_url`, an httpx internal), skipping the client's header merging,
    cookies, auth flows and redirect handling, none of which an upstream call uses. Stock
    (GATEWAY_FAST_PATH=0): `client.send(request, stream=True)`.
    """
    if not fastpath.enabled():
        return await client.send(request, stream=True)
    transport = client._transport_for_url(request.url)
    response = await transport.handle_async_request(request)
    response.request = request
    return response
