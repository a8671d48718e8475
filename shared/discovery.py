"""Finding the hub: a `Discovery` interface, a static one, and zeroconf (mDNS) on the LAN.

The hub advertises one `_fleethub._tcp` service whose TXT record carries the wire protocol
version, its two listen addresses and, with TLS, a certificate fingerprint. A listen address
on a wildcard host (`tcp://0.0.0.0:7461`) is completed by the node with the address it resolved
the service to. mDNS is unauthenticated: what it finds is only where to dial; the frame MAC
(and TLS, when used) decide whom to trust.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from shared.hub_address import Discovery, HubAddress
from shared.wire import PROTOCOL_VERSION

__all__ = [
    "Discovery",
    "HubAddress",
    "StaticDiscovery",
    "ZeroconfAdvertiser",
    "ZeroconfDiscovery",
    "hub_address_from_txt",
    "txt_properties",
]

SERVICE_TYPE: Final = "_fleethub._tcp.local."
# RFC 6335 service name: 1..15 letters, digits and single inner hyphens
_SERVICE_TYPE_RE: Final = re.compile(
    r"_(?=[^.]{1,15}\.)[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\._(tcp|udp)\.local\."
)

Interfaces = Sequence[str] | InterfaceChoice  # IPs of the interfaces to use, or All
_WILDCARDS: Final = frozenset({"", "*", "0.0.0.0", "::"})

log = logging.getLogger(__name__)


class StaticDiscovery:
    """A fixed answer: the hub address from the config file, or a test's."""

    def __init__(self, address: HubAddress | None) -> None:
        self.address = address

    async def find(self, timeout: float) -> HubAddress | None:  # noqa: ASYNC109
        return self.address


def txt_properties(events: str, commands: str, fingerprint: str | None) -> dict[str, str]:
    props = {"v": str(PROTOCOL_VERSION), "events": events, "commands": commands}
    if fingerprint:
        props["fp"] = fingerprint
    return props


def hub_address_from_txt(props: Mapping[str, str | None], host: str) -> HubAddress | None:
    """The address a TXT record describes, with wildcard hosts replaced by `host`; None for a
    hub of another protocol version or an incomplete record."""
    if props.get("v") != str(PROTOCOL_VERSION):
        return None
    events, commands = props.get("events"), props.get("commands")
    if not events or not commands:
        return None
    try:
        return HubAddress(
            events=_complete(events, host),
            commands=_complete(commands, host),
            fingerprint=props.get("fp") or None,
        )
    except ValueError:
        return None


def _complete(address: str, host: str) -> str:
    parts = urlsplit(address)
    if parts.port is None:
        raise ValueError(f"address {address!r} has no port")
    if (parts.hostname or "") in _WILDCARDS:
        return f"{parts.scheme}://{host}:{parts.port}"
    return address


def _check_service_type(service_type: str) -> None:
    if not _SERVICE_TYPE_RE.fullmatch(service_type):
        raise ValueError(
            f"invalid mDNS service type {service_type!r}: expected _<name>._tcp.local. "
            "with a name of 1..15 letters, digits and inner hyphens"
        )


class ZeroconfAdvertiser:
    """Publishes the hub on the LAN while it runs (async start/stop on the hub's loop)."""

    def __init__(
        self,
        name: str,
        events: str,
        commands: str,
        *,
        fingerprint: str | None = None,
        service_type: str = SERVICE_TYPE,
        interfaces: Interfaces = InterfaceChoice.All,
        addresses: Sequence[str] | None = None,
        cooperating_responders: bool = False,
    ) -> None:
        _check_service_type(service_type)
        if not name or len(name.encode()) > 63:
            raise ValueError(f"hub name {name!r} must be 1..63 bytes (an mDNS instance label)")
        self.name = name
        self.service_type = service_type
        self.interfaces = interfaces
        self.cooperating_responders = cooperating_responders
        port = urlsplit(events).port
        if port is None or urlsplit(commands).port is None:
            raise ValueError(f"cannot advertise {events!r} / {commands!r}: tcp addresses only")
        self._port = port
        self._txt = txt_properties(events, commands, fingerprint)
        self._addresses = list(addresses) if addresses else _publish_addresses(events, interfaces)
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def registered_name(self) -> str | None:
        """The full service name, possibly renamed after a conflict with another hub."""
        return self._info.name if self._info else None

    async def start(self) -> None:
        server = re.sub(r"[^A-Za-z0-9-]", "-", self.name)[:63] + ".local."
        info = AsyncServiceInfo(
            self.service_type,
            f"{self.name}.{self.service_type}",
            port=self._port,
            properties=self._txt,
            server=server,
            parsed_addresses=self._addresses,
        )
        azc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        try:
            # The first await probes for a name conflict (skipped when cooperating), the
            # returned task announces.
            announce = await azc.async_register_service(
                info, allow_name_change=True, cooperating_responders=self.cooperating_responders
            )
            await announce
        except BaseException:
            await azc.async_close()
            raise
        self._azc, self._info = azc, info
        log.info("advertising %s at %s", info.name, ", ".join(self._addresses))

    async def stop(self) -> None:
        azc, info, self._azc, self._info = self._azc, self._info, None, None
        if azc is None or info is None:
            return
        try:
            await (await azc.async_unregister_service(info))  # goodbye packets
        finally:
            await azc.async_close()


def _publish_addresses(events: str, interfaces: Interfaces) -> list[str]:
    host = urlsplit(events).hostname or ""
    if host not in _WILDCARDS and _is_ipv4(host):
        return [host]
    if not isinstance(interfaces, InterfaceChoice):
        ips = [i for i in interfaces if _is_ipv4(i)]
        if ips:
            return ips
    return [_primary_ipv4()]


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _primary_ipv4() -> str:
    # A UDP "connect" sends nothing; it only asks the kernel which source address it would use.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError as exc:
            raise OSError(
                f"cannot tell this host's IPv4 address to advertise ({exc}); pass addresses="
            ) from exc
        address: str = probe.getsockname()[0]
        return address


class ZeroconfDiscovery:
    """Browses the LAN for a hub (`hub_name` picks one when several advertise)."""

    def __init__(
        self,
        service_type: str = SERVICE_TYPE,
        interfaces: Interfaces = InterfaceChoice.All,
        *,
        hub_name: str | None = None,
    ) -> None:
        _check_service_type(service_type)
        self.service_type = service_type
        self.interfaces = interfaces
        self.hub_name = hub_name

    async def find(self, timeout: float) -> HubAddress | None:  # noqa: ASYNC109
        """Raises OSError when multicast cannot be set up on the chosen interfaces."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        names: asyncio.Queue[str] = asyncio.Queue()

        # zeroconf calls handlers with keyword arguments: the parameter names matter.
        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if state_change is not ServiceStateChange.Removed:
                loop.call_soon_threadsafe(names.put_nowait, name)

        wanted = f"{self.hub_name}.{self.service_type}".lower() if self.hub_name else None
        azc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        try:
            browser = AsyncServiceBrowser(azc.zeroconf, [self.service_type], handlers=[on_change])
            try:
                while (left := deadline - loop.time()) > 0:
                    try:
                        name = await asyncio.wait_for(names.get(), left)
                    except TimeoutError:
                        break
                    if wanted is not None and name.lower() != wanted:
                        continue
                    found = await self._resolve(azc, name, deadline - loop.time())
                    if found is not None:
                        return found
                return None
            finally:
                await browser.async_cancel()
        finally:
            await azc.async_close()

    async def _resolve(self, azc: AsyncZeroconf, name: str, left: float) -> HubAddress | None:
        info = AsyncServiceInfo(self.service_type, name)
        if left <= 0 or not await info.async_request(azc.zeroconf, max(1, int(left * 1000))):
            return None
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not addresses:
            return None
        found = hub_address_from_txt(info.decoded_properties, addresses[0])
        if found is None:
            log.info("ignoring %s: not a fleet hub of protocol version %d", name, PROTOCOL_VERSION)
        return found
