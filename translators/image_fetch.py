"""Fetching a client's https image URL for an upstream that takes inline bytes only.

The gateway fetches on the client's behalf, so the fetch must not become a way
into the gateway's own network (SSRF): the host is resolved once, every
address must be globally routable, and the connection goes to exactly the
addresses that were checked (a pinned resolver, so no second DNS lookup can
rebind the name to an inside address). No redirects are followed, the body is
read up to a size cap, the whole fetch has a timeout, and the content type
must be one the upstream accepts. Every refusal is a 400 naming the part.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from proxy.core.errors import GatewayError, bad_request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: what Gemini takes as image inlineData (image/jpg is the same as image/jpeg)
GEMINI_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic",
                                "image/heif"})
_ALIASES = {"image/jpg": "image/jpeg"}


def is_public(address: IPAddress) -> bool:
    """Only globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour  # an IPv4 address in disguise
        if embedded is not None:
            address = embedded
        elif address.teredo is not None:
            return False
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local
        or address.is_multicast or address.is_reserved or address.is_unspecified)


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What a fetch may do. `allow_address` and `schemes` exist so tests can reach a
    loopback server; production uses the defaults."""

    max_bytes: int = 10 * 1024 * 1024
    timeout: float = 10.0
    allow_address: Callable[[IPAddress], bool] = is_public
    schemes: tuple[str, ...] = ("https",)
    media_types: frozenset[str] = GEMINI_IMAGE_TYPES


@dataclass(frozen=True, slots=True)
class Image:
    media_type: str
    data: bytes


class _PinnedResolver(AbstractResolver):
    """Answers with the addresses already checked, for the one host only."""

    def __init__(self, host: str, results: list[ResolveResult]) -> None:
        self._host = host
        self._results = results

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host != self._host:  # cannot happen without redirects; refuse rather than look up
            raise OSError(f"unexpected host {host!r}")
        return [dict(r, port=port or r["port"]) for r in self._results]  # type: ignore[misc]

    async def close(self) -> None:
        return None


def image_url_of(part: dict[str, Any]) -> Any:
    spec = part.get("image_url")
    return spec.get("url") if isinstance(spec, dict) else spec


def image_urls(chat: dict[str, Any]) -> list[tuple[str, str]]:
    """(path of the url, url) for each user image that is not a data URL: what a
    translator that fetches URLs must fetch before building its request.
    Malformed input is left for the request mapping to name."""
    out = []
    messages = chat.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict) or message.get("role") != "user" or \
                not isinstance(message.get("content"), list):
            continue
        for k, part in enumerate(message["content"]):
            url = image_url_of(part) if isinstance(part, dict) and \
                part.get("type") == "image_url" else None
            if isinstance(url, str) and not url.startswith("data:"):
                out.append((f"messages[{i}].content[{k}].image_url.url", url))
    return out


def _refuse(path: str, why: str) -> GatewayError:
    return bad_request(f"Invalid '{path}': the gateway could not use this image URL ({why}).",
                       param=path, code="invalid_image_url")


async def fetch_image(url: str, path: str, policy: FetchPolicy) -> Image:
    """The image at `url`, or a 400 naming `path`."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in policy.schemes:
        raise _refuse(path, f"only {'/'.join(policy.schemes)} URLs are fetched")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise _refuse(path, "invalid port") from None
    if not host or parts.username is not None or parts.password is not None:
        raise _refuse(path, "a host is required and credentials are not allowed")
    try:
        async with asyncio.timeout(policy.timeout):
            results = await _resolve(host, port, path, policy)
            return await _get(url, host, results, path, policy)
    except TimeoutError:
        raise _refuse(path, f"no complete answer within {policy.timeout:g}s") from None


async def _resolve(host: str, port: int, path: str, policy: FetchPolicy) -> list[ResolveResult]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _refuse(path, "the host name does not resolve") from None
    results: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not policy.allow_address(address):
            raise _refuse(path, "the host is not a public address")
        results.append(ResolveResult(hostname=host, host=str(address), port=port, family=family,
                                     proto=proto, flags=socket.AI_NUMERICHOST))
    if not results:
        raise _refuse(path, "the host name does not resolve")
    return results


async def _get(url: str, host: str, results: list[ResolveResult], path: str,
               policy: FetchPolicy) -> Image:
    connector = aiohttp.TCPConnector(resolver=_PinnedResolver(host, results), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        try:
            async with session.get(url, allow_redirects=False,
                                   headers={"accept": ", ".join(sorted(policy.media_types))},
                                   auto_decompress=False) as resp:
                if resp.status != 200:
                    raise _refuse(path, f"it answered HTTP {resp.status}"
                                  + (", redirects are not followed" if 300 <= resp.status < 400
                                     else ""))
                media_type = resp.content_type.lower()
                media_type = _ALIASES.get(media_type, media_type)
                if media_type not in policy.media_types:
                    raise _refuse(path, f"content type {media_type!r} is not one of "
                                  f"{', '.join(sorted(policy.media_types))}")
                if resp.headers.get("content-encoding", "identity").lower() != "identity":
                    raise _refuse(path, "compressed image bodies are not accepted")
                length = resp.content_length
                if length is not None and length > policy.max_bytes:
                    raise _refuse(path, f"larger than {policy.max_bytes} bytes")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > policy.max_bytes:
                        raise _refuse(path, f"larger than {policy.max_bytes} bytes")
                return Image(media_type, bytes(data))
        except aiohttp.ClientError as err:
            raise _refuse(path, f"fetch failed: {type(err).__name__}") from None
