"""Keeping every reader's trust current: on connect, and whenever it changes.

A reader can only refuse a revoked key offline if its trust document says so, and can only
admit a credential whose signing key it knows. So the gateway publishes each guarding
device's document (retained, so a reader that reconnects gets it from the broker) every
time the device connects, and for the whole site after each change: a key revoked,
suspended or resumed, a signing key rotated.
"""

from __future__ import annotations

from uuid import UUID

from sesame.devices import protocol
from sesame.devices.repository import DeviceRepository
from sesame.keys.credentials import trust_documents, trust_version
from sesame.kit.db import commit, write_intent
from sesame.kit.logging import get_logger
from sesame.kit.repository import TenantScope
from sesame.models import Device, DeviceKind, DeviceStatus, Site
from sesame.runtime import Runtime
from sesame.sites.repository import SiteRepository

log = get_logger("sesame.keys.trust")


async def _publish(runtime: Runtime, site: Site, devices: list[Device]) -> int:
    gateway = runtime.gateway
    if gateway is None or not gateway.can_publish:
        return 0
    sent = 0
    with write_intent():  # the first document of a site creates its signing key
        async with runtime.session_factory() as session:
            documents = await trust_documents(
                session, runtime, site, [d.entrance_id for d in devices]
            )
            await commit(session)
    for device, document in zip(devices, documents, strict=True):
        await gateway.publish(
            protocol.topic(device.id, protocol.Channel.TRUST),
            protocol.encode(document),
            protocol.QOS[protocol.Channel.TRUST],
            retain=True,
        )
        sent += 1
    return sent


async def publish_site(runtime: Runtime, site_id: UUID) -> int:
    """Send the current trust to every device guarding an entrance of the site."""
    async with runtime.read_session_factory() as session:
        site = await SiteRepository(session).get(TenantScope.platform(), site_id)
        devices = list(await DeviceRepository(session).guarding(site_id))
    if site is None or not devices:
        return 0
    sent = await _publish(runtime, site, devices)
    log.info("trust_published", site_id=str(site_id), devices=sent)
    return sent


async def on_device_online(runtime: Runtime, device_id: UUID) -> None:
    """A device's trust, on each connection and when it moves: the site's for a device
    guarding an entrance; for a reader bound to none, a document naming no entrance and
    no key, so that it refuses everything (``no_trust``) rather than keep deciding for
    the entrance it guarded before."""
    async with runtime.read_session_factory() as session:
        device = await DeviceRepository(session).by_id(device_id)
        if device is None or device.status is not DeviceStatus.ACTIVE:
            return
        if device.entrance_id is None:
            if device.kind is DeviceKind.ENTRANCE_READER:
                await _publish_unbound(runtime, device)
            return
        site = await SiteRepository(session).get(TenantScope.platform(), device.site_id)
    if site is not None:
        await _publish(runtime, site, [device])


async def _publish_unbound(runtime: Runtime, device: Device) -> None:
    gateway = runtime.gateway
    if gateway is None or not gateway.can_publish:
        return
    with write_intent():
        async with runtime.session_factory() as session:
            version = await trust_version(session, runtime, device.site_id)
            await commit(session)
    document = protocol.TrustDocument(
        version=version, site_id=device.site_id, entrance_id=None, keys=[]
    )
    await gateway.publish(
        protocol.topic(device.id, protocol.Channel.TRUST),
        protocol.encode(document),
        protocol.QOS[protocol.Channel.TRUST],
        retain=True,
    )
