"""The notification API: one's own destinations, preferences and notifications; partners'
webhook endpoints; staff's campaigns and the delivery log."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Query, Response

from sesame.api.crud import ResourceSpec, crud_router
from sesame.api.deps import AppRuntime, CurrentPrincipal, DbSession
from sesame.api.route import API_PREFIX, SesameRoute
from sesame.kit.pagination import CURSOR_PATTERN, Page, decode_cursor, next_cursor
from sesame.notifications import service
from sesame.notifications.channels.webpush import vapid_public_key_b64
from sesame.notifications.install import load_vapid_key
from sesame.notifications.repository import DeliveryRepository
from sesame.notifications.schemas import (
    CampaignCreate,
    CampaignQuery,
    CampaignRead,
    ConfirmationIn,
    DeliveryQuery,
    DeliveryRead,
    DestinationIn,
    DestinationRead,
    PreferenceIn,
    PreferenceRead,
    WebhookEndpointCreate,
    WebhookEndpointQuery,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebPushKey,
)

me_router = APIRouter(prefix=f"{API_PREFIX}/me", tags=["me"], route_class=SesameRoute)
router = APIRouter(
    prefix=f"{API_PREFIX}/notifications", tags=["notifications"], route_class=SesameRoute
)


def _destination(row: Any) -> DestinationRead:
    return DestinationRead.model_validate(
        {
            **{c: getattr(row, c) for c in DestinationRead.model_fields if c != "shown"},
            "shown": service.shown(row),
        }
    )


@me_router.get(
    "/notification-destinations",
    response_model=list[DestinationRead],
    operation_id="list_my_notification_destinations",
)
async def my_destinations(principal: CurrentPrincipal, session: DbSession) -> Any:
    """Where you are reached: app installs, browsers, e-mail addresses."""
    return [_destination(row) for row in await service.destinations(session, principal)]


@me_router.post(
    "/notification-destinations",
    status_code=201,
    response_model=DestinationRead,
    operation_id="register_my_notification_destination",
)
async def register_destination(
    body: Annotated[DestinationIn, Body()],
    principal: CurrentPrincipal,
    session: DbSession,
    runtime: AppRuntime,
) -> Any:
    """Register an app install's FCM token (a new token for the same `install_id`
    replaces the old one), a browser's Web Push subscription, or an e-mail address.

    An e-mail address starts inactive (`unconfirmed`): a code is mailed to it, to be
    entered at `.../{id}/confirm`. A token or subscription active for someone else is a
    409 until they remove it (an app removes its destination when its user signs out)."""
    return _destination(await service.register(session, runtime, principal, body))


@me_router.post(
    "/notification-destinations/{destination_id}/confirm",
    response_model=DestinationRead,
    operation_id="confirm_my_notification_destination",
)
async def confirm_destination(
    destination_id: UUID,
    body: ConfirmationIn,
    principal: CurrentPrincipal,
    session: DbSession,
    runtime: AppRuntime,
) -> Any:
    """Enter the code mailed to an address: the destination becomes active. Five wrong
    codes, or thirty minutes, and the address must be registered again for a new one."""
    row = await service.confirm(session, runtime, principal, destination_id, body.code)
    return _destination(row)


@me_router.delete(
    "/notification-destinations/{destination_id}",
    status_code=204,
    response_class=Response,
    operation_id="remove_my_notification_destination",
)
async def remove_destination(
    destination_id: UUID, principal: CurrentPrincipal, session: DbSession
) -> Response:
    await service.remove(session, principal, destination_id)
    return Response(status_code=204)


@me_router.get(
    "/notification-preferences",
    response_model=list[PreferenceRead],
    operation_id="list_my_notification_preferences",
)
async def my_preferences(principal: CurrentPrincipal, session: DbSession) -> Any:
    """Every category, with your choice; critical ones are always delivered."""
    return await service.preferences(session, principal)


@me_router.put(
    "/notification-preferences",
    response_model=list[PreferenceRead],
    operation_id="set_my_notification_preferences",
)
async def set_preferences(
    body: list[PreferenceIn], principal: CurrentPrincipal, session: DbSession
) -> Any:
    await service.set_preferences(session, principal, body)
    return await service.preferences(session, principal)


@me_router.get(
    "/notifications", response_model=Page[DeliveryRead], operation_id="list_my_notifications"
)
async def my_notifications(
    principal: CurrentPrincipal,
    session: DbSession,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """What was sent to you, newest first, with each delivery's status."""
    owner = service.Owner(principal)
    rows = await DeliveryRepository(session).of_owner(
        owner.person_ids, owner.staff_id, decode_cursor(cursor) if cursor else None, limit + 1
    )
    return Page(
        items=[DeliveryRead.model_validate(r) for r in rows[:limit]],
        next_cursor=next_cursor(rows, limit),
    )


@router.get("/web-push-key", response_model=WebPushKey, operation_id="get_web_push_key")
async def web_push_key(runtime: AppRuntime) -> WebPushKey:
    """The server's VAPID public key, for a browser's `applicationServerKey`."""
    return WebPushKey(public_key=vapid_public_key_b64(await load_vapid_key(runtime)))


campaigns_router = APIRouter(
    prefix=f"{API_PREFIX}/notifications/campaigns", tags=["notifications"], route_class=SesameRoute
)


async def _campaign(svc: service.CampaignService, campaign: Any) -> CampaignRead:
    read = CampaignRead.model_validate(campaign)
    read.deliveries = await svc.counts(campaign)
    return read


@campaigns_router.post(
    "", status_code=201, response_model=CampaignRead, operation_id="create_campaign"
)
async def create_campaign(
    body: CampaignCreate,
    response: Response,
    principal: CurrentPrincipal,
    session: DbSession,
    runtime: AppRuntime,
) -> Any:
    """A message to every resident of a site (or of one building), now or at `send_at`."""
    svc = service.CampaignService(session, principal, runtime)
    campaign = await svc.create(body)
    response.headers["Location"] = f"{campaigns_router.prefix}/{campaign.id}"
    return CampaignRead.model_validate(campaign)


@campaigns_router.get("", response_model=Page[CampaignRead], operation_id="list_campaigns")
async def list_campaigns(
    query: Annotated[CampaignQuery, Query()],
    principal: CurrentPrincipal,
    session: DbSession,
    runtime: AppRuntime,
) -> Any:
    items, cursor = await service.CampaignService(session, principal, runtime).list(query)
    return Page(items=[CampaignRead.model_validate(i) for i in items], next_cursor=cursor)


@campaigns_router.get("/{campaign_id}", response_model=CampaignRead, operation_id="get_campaign")
async def get_campaign(
    campaign_id: UUID, principal: CurrentPrincipal, session: DbSession, runtime: AppRuntime
) -> Any:
    """The campaign, with its deliveries counted by status: its progress."""
    svc = service.CampaignService(session, principal, runtime)
    return await _campaign(svc, await svc.get(campaign_id))


@campaigns_router.post(
    "/{campaign_id}/cancel", response_model=CampaignRead, operation_id="cancel_campaign"
)
async def cancel_campaign(
    campaign_id: UUID, principal: CurrentPrincipal, session: DbSession, runtime: AppRuntime
) -> Any:
    """Stop a scheduled campaign before it starts sending."""
    svc = service.CampaignService(session, principal, runtime)
    return CampaignRead.model_validate(await svc.cancel(campaign_id))


deliveries_router = crud_router(
    ResourceSpec(
        "delivery",
        "notifications/deliveries",
        service.DeliveryService,
        DeliveryRead,
        DeliveryQuery,
        DeliveryQuery,
        DeliveryQuery,
        operations=frozenset({"read", "list"}),
        list_name="notification_deliveries",
    )
)

webhooks_router = crud_router(
    ResourceSpec(
        "webhook_endpoint",
        "webhook-endpoints",
        service.WebhookEndpointService,
        WebhookEndpointRead,
        WebhookEndpointCreate,
        WebhookEndpointUpdate,
        WebhookEndpointQuery,
    )
)


@webhooks_router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=WebhookEndpointRead,
    operation_id="rotate_webhook_endpoint_secret",
)
async def rotate_secret(
    endpoint_id: UUID, principal: CurrentPrincipal, session: DbSession, runtime: AppRuntime
) -> Any:
    """A new signing secret, shown once. The previous one keeps signing (a second
    signature) for 24 hours, so receivers can switch over without losing a message."""
    svc = service.WebhookEndpointService(session, principal, runtime)
    return await svc.rotate(endpoint_id)


routers = (me_router, router, campaigns_router, deliveries_router, webhooks_router)
