"""Where people are reached and what they want; partners' webhook endpoints; campaigns.

- **Destinations.** A resident registers app installs (an FCM token per install: a new
  token replaces the install's old one), browsers (Web Push subscriptions) and e-mail
  addresses; staff register the same for themselves and are reached at their account's
  address otherwise. One person's registration never deactivates another's: a token or
  subscription active for someone else is refused until they remove it, and an e-mail
  address is active only once its owner confirms it (``confirmation``).
- **Preferences** are per category; critical categories ignore them.
- **Webhook endpoints** belong to a partner (or, for operational alerts, the platform).
  Their secret is sealed at rest and shown once; a rotation keeps the previous secret
  valid (both sign) for a day, so receivers can switch without losing a message.
- **Campaigns** are queued by a job, page by page, at their ``send_at``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.crud import CrudService
from sesame.auth.principal import Action, Group, Principal
from sesame.jobs import service as jobs
from sesame.kit.egress import EgressRefused, Unresolvable
from sesame.kit.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from sesame.kit.ids import new_id
from sesame.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    Destination,
    DestinationKind,
    Preference,
    WebhookEndpoint,
)
from sesame.notifications import confirmation
from sesame.notifications.catalog import CATEGORIES
from sesame.notifications.channels.webhook import new_secret
from sesame.notifications.repository import (
    CampaignRepository,
    DeliveryRepository,
    NotificationRepository,
    WebhookEndpointRepository,
)
from sesame.notifications.sender import webhook_keys
from sesame.runtime import Runtime
from sesame.sites.repository import BuildingRepository, SiteRepository

CAMPAIGN_JOB = "notifications.campaign"
ROTATION_OVERLAP = timedelta(hours=24)


def digest(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def shown(destination: Destination) -> str:
    if destination.kind is DestinationKind.EMAIL:
        return destination.address
    if destination.kind is DestinationKind.WEBPUSH:
        return urlsplit(destination.address).netloc
    return f"…{destination.address[-6:]}"


class Owner:
    """Whose destinations and preferences a "me" request reads: a resident's persons (one
    per partner) or a staff member."""

    def __init__(self, principal: Principal) -> None:
        if principal.kind == "resident" and principal.person_ids:
            self.person_ids, self.staff_id = sorted(principal.person_ids), None
        elif principal.kind == "staff" and principal.staff_id is not None:
            self.person_ids, self.staff_id = [], principal.staff_id
        else:
            raise Forbidden("notification settings belong to residents of a site and to staff")
        self.partner_id = principal.scope.partner_id

    def owns(self, row: Any) -> bool:
        if self.staff_id is not None:
            return bool(row.staff_id == self.staff_id)
        return row.person_id in self.person_ids

    def rows(self) -> list[dict[str, Any]]:
        """One owner column set per row to write."""
        if self.staff_id is not None:
            return [{"staff_id": self.staff_id, "person_id": None}]
        return [{"person_id": p, "staff_id": None} for p in self.person_ids]


async def _partner_of_person(session: AsyncSession, person_id: UUID) -> UUID | None:
    return await NotificationRepository(session).partner_of_person(person_id)


async def register(
    session: AsyncSession, runtime: Runtime, principal: Principal, data: Any
) -> Destination:
    """Add (or refresh) a destination for the caller; returns the first row written.

    Nobody else's registration is touched. An app install or browser active for someone
    else is refused (409) until they remove it — as an app does when its user signs out —
    or the provider reports it gone. An e-mail address stays inactive until confirmed.
    """
    owner = Owner(principal)
    kind = DestinationKind(data.kind)
    address = {"fcm": "token", "webpush": "endpoint", "email": "address"}[data.kind]
    value = getattr(data, address)
    keys = data.keys.model_dump() if kind is DestinationKind.WEBPUSH else {}
    install_id = getattr(data, "install_id", None)
    if kind is DestinationKind.WEBPUSH:
        await check_egress(session, runtime, value, field="endpoint", https_only=True)
    key = digest(value)
    now = runtime.clock.now()
    repository = NotificationRepository(session)
    same = await repository.destinations_with(kind, key)
    if kind is not DestinationKind.EMAIL and any(d.active and not owner.owns(d) for d in same):
        raise Conflict(
            "this app install or browser is registered to someone else; it can be registered "
            "again once they sign out of it (remove it) or it gets a new token",
            reason="destination_in_use",
        )
    # An address the caller confirmed before (under any of their persons) needs no code.
    confirmed = kind is not DestinationKind.EMAIL or any(
        owner.owns(d) and d.deactivated_reason != confirmation.UNCONFIRMED for d in same
    )
    written: list[Destination] = []
    for columns in owner.rows():
        person_id = columns["person_id"]
        row: Destination | None = None
        if install_id is not None and person_id is not None:
            row = await repository.install_destination(person_id, install_id)
        if row is None:
            row = await repository.owned_destination(columns, kind, key)
        if row is None:
            partner_id = (
                await _partner_of_person(session, person_id) if person_id else owner.partner_id
            )
            row = Destination(
                id=new_id(), partner_id=partner_id, kind=kind, confirmation_attempts=0, **columns
            )
            session.add(row)
        row.address, row.address_digest, row.keys = value, key, keys
        row.install_id, row.label = install_id, data.label
        if confirmed:
            row.active, row.deactivated_at, row.deactivated_reason = True, None, None
        else:
            row.active, row.deactivated_at = False, row.deactivated_at or now
            row.deactivated_reason = confirmation.UNCONFIRMED
        written.append(row)
    await session.flush()
    if not confirmed:
        locale = await repository.locale_of(written[0].person_id)
        await confirmation.send_code(session, runtime, written, locale=locale, now=now)
        await session.flush()
    return written[0]


async def confirm(
    session: AsyncSession, runtime: Runtime, principal: Principal, destination_id: UUID, code: str
) -> Destination:
    """The owner's code for an e-mail address: it becomes active (for every person of
    theirs that registered it). Wrong tries are counted even though the request fails."""
    owner = Owner(principal)
    row = await session.get(Destination, destination_id)
    if row is None or not owner.owns(row):
        raise NotFound(f"destination {destination_id} not found")
    if row.deactivated_reason != confirmation.UNCONFIRMED:
        if row.active:
            return row  # confirmed already: a repeated request changes nothing
        raise Conflict("this destination has nothing to confirm", reason="nothing_to_confirm")
    now = runtime.clock.now()
    waiting = [
        d
        for d in await NotificationRepository(session).destinations_with(
            row.kind, row.address_digest
        )
        if owner.owns(d) and d.deactivated_reason == confirmation.UNCONFIRMED
    ]
    if row.confirmation_expires_at is None or row.confirmation_expires_at <= now:
        raise Conflict(
            "the code has expired; register the address again for a new one",
            reason="confirmation_expired",
        )
    if row.confirmation_attempts >= confirmation.MAX_ATTEMPTS:
        raise Conflict(
            "too many wrong codes; register the address again for a new one",
            reason="confirmation_locked",
        )
    if not confirmation.matches(confirmation.confirmation_key(runtime), row, code):
        for d in waiting:
            d.confirmation_attempts += 1
        await session.flush()
        raise ValidationFailed(
            "wrong code",
            errors=[FieldError(("body", "code"), "not the code sent", "wrong_code")],
            keep_changes=True,
        )
    for d in waiting:
        d.active, d.deactivated_at, d.deactivated_reason = True, None, None
        d.confirmation_digest, d.confirmation_expires_at = None, None
        d.confirmation_attempts = 0
    await session.flush()
    return row


async def destinations(session: AsyncSession, principal: Principal) -> list[Destination]:
    return list(await NotificationRepository(session).owned(Owner(principal).rows()))


async def remove(session: AsyncSession, principal: Principal, destination_id: UUID) -> None:
    owner = Owner(principal)
    row = await session.get(Destination, destination_id)
    if row is None or not owner.owns(row):
        raise NotFound(f"destination {destination_id} not found")
    # The same address registered for the caller's other persons goes too.
    for other in await NotificationRepository(session).destinations_with(
        row.kind, row.address_digest
    ):
        if owner.owns(other):
            await session.delete(other)
    await session.flush()


async def preferences(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    owner = Owner(principal)
    stored = {
        p.category: p for p in await NotificationRepository(session).preferences(owner.rows()[:1])
    }
    return [
        {
            "category": name,
            "description": category.description,
            "critical": category.critical,
            "enabled": True if category.critical or name not in stored else stored[name].enabled,
            "channels": None if name not in stored else stored[name].channels,
        }
        for name, category in CATEGORIES.items()
    ]


async def set_preferences(session: AsyncSession, principal: Principal, changes: list[Any]) -> None:
    owner = Owner(principal)
    repository = NotificationRepository(session)
    for columns in owner.rows():
        current = {p.category: p for p in await repository.preferences([columns])}
        partner_id = (
            await _partner_of_person(session, columns["person_id"])
            if columns["person_id"]
            else owner.partner_id
        )
        for change in changes:
            row = current.get(change.category)
            if row is None:
                row = Preference(
                    id=new_id(), partner_id=partner_id, category=change.category, **columns
                )
                session.add(row)
                current[change.category] = row
            row.enabled, row.channels = change.enabled, change.channels
    await session.flush()


async def check_egress(
    session: AsyncSession, runtime: Runtime, url: str, *, field: str, https_only: bool = False
) -> None:
    """Refuse (422) a URL the egress policy would never send to: this host, a private
    network, a metadata service, in any spelling or behind any name. A name that does not
    resolve now passes: it reaches nothing, and every delivery checks again.

    A lookup may take seconds and must not hold SQLite's write lock meanwhile: so far the
    request has only read (its credential), and that transaction ends before it.
    """
    policy = runtime.egress
    if not policy.enforced:
        return
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        await session.rollback()
    try:
        await policy.check_url(url, https_only=https_only)
    except Unresolvable:
        return
    except EgressRefused as exc:
        raise ValidationFailed(
            f"{field} must reach a public host over the internet",
            errors=[FieldError(("body", field), str(exc), exc.reason)],
        ) from exc


class WebhookEndpointService(CrudService[WebhookEndpoint]):
    group = Group.NOTIFICATIONS
    noun = "webhook endpoint"
    repository_class = WebhookEndpointRepository

    async def create(self, data: Any) -> WebhookEndpoint:
        self.principal.require(self.group, Action.WRITE)
        self.principal.require_partner_level("managing webhook endpoints")
        await check_egress(self.session, self.runtime, data.url, field="url")
        return await super().create(data)

    async def update(self, object_id: UUID, data: Any) -> WebhookEndpoint:
        if data.url:
            self.principal.require(self.group, Action.WRITE)
            await check_egress(self.session, self.runtime, data.url, field="url")
        return await super().update(object_id, data)

    async def build(self, data: Any) -> WebhookEndpoint:
        self.principal.require_partner_level("managing webhook endpoints")
        if self.principal.scope.partner_id is None and data.partner_id is None:
            partner_id = None  # the platform's own: operational alerts
        else:
            partner_id = await self.owning_partner(data.partner_id)
        endpoint_id = new_id()
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id=endpoint_id,
            partner_id=partner_id,
            url=data.url,
            description=data.description,
            event_types=sorted(set(data.event_types)),
            sealed_secret=webhook_keys(self.runtime).seal(secret.encode(), endpoint_id.bytes),
            active=True,
        )
        endpoint.secret = secret  # type: ignore[attr-defined]  # shown once, never stored plain
        return endpoint

    async def apply(self, obj: WebhookEndpoint, changes: dict[str, Any]) -> None:
        if "event_types" in changes and changes["event_types"] is not None:
            changes["event_types"] = sorted(set(changes["event_types"]))
        await super().apply(obj, changes)

    async def rotate(self, endpoint_id: UUID) -> WebhookEndpoint:
        """A new secret, shown once; the old one still signs for a day."""
        self.principal.require(self.group, Action.WRITE)
        endpoint: WebhookEndpoint = await self.visible(self.repository, endpoint_id, self.noun)
        secret = new_secret()
        endpoint.sealed_previous_secret = endpoint.sealed_secret
        endpoint.previous_expires_at = self.runtime.clock.now() + ROTATION_OVERLAP
        endpoint.sealed_secret = webhook_keys(self.runtime).seal(secret.encode(), endpoint.id.bytes)
        await self.session.flush()
        endpoint.secret = secret  # type: ignore[attr-defined]
        return endpoint


class DeliveryService(CrudService[Delivery]):
    group = Group.NOTIFICATIONS
    noun = "delivery"
    repository_class = DeliveryRepository


class CampaignService(CrudService[Campaign]):
    group = Group.NOTIFICATIONS
    noun = "campaign"
    repository_class = CampaignRepository

    async def build(self, data: Any) -> Campaign:
        site = await self.visible(SiteRepository(self.session), data.site_id, "site")
        if data.building_id is not None:
            building = await self.visible(
                BuildingRepository(self.session), data.building_id, "building"
            )
            if building.site_id != site.id:
                raise ValidationFailed(
                    "the building is not at this site",
                    errors=[FieldError(("body", "building_id"), "not at the site", "wrong_site")],
                )
        now = self.runtime.clock.now()
        send_at = data.send_at or now
        return Campaign(
            id=new_id(),
            partner_id=site.partner_id,
            site_id=site.id,
            building_id=data.building_id,
            content={lang: text.model_dump() for lang, text in data.content.items()},
            send_at=send_at,
            status=CampaignStatus.SCHEDULED,
            created_by=self.principal.reference(),
            recipients=0,
        )

    async def create(self, data: Any) -> Campaign:
        campaign = await super().create(data)
        await jobs.schedule(
            self.session,
            self.runtime,
            CAMPAIGN_JOB,
            key=f"{CAMPAIGN_JOB}:{campaign.id}",
            due_at=campaign.send_at,
            payload={"campaign_id": str(campaign.id)},
            partner_id=campaign.partner_id,
        )
        return campaign

    async def cancel(self, campaign_id: UUID) -> Campaign:
        self.principal.require(self.group, Action.WRITE)
        campaign: Campaign = await self.visible(self.repository, campaign_id, self.noun)
        if campaign.status is not CampaignStatus.SCHEDULED:
            raise Conflict("only a campaign not yet sending can be cancelled")
        campaign.status = CampaignStatus.CANCELLED
        await jobs.cancel(self.session, f"{CAMPAIGN_JOB}:{campaign.id}")
        await self.session.flush()
        return campaign

    async def counts(self, campaign: Campaign) -> dict[str, int]:
        return await NotificationRepository(self.session).counts_by_status(campaign_id=campaign.id)
