"""Sending a campaign: its job queues one delivery per resident destination, a page of
residents per transaction, keeping its place (``cursor``) on the campaign row — so a
crash resumes where it stopped, memory does not grow with the audience, and progress
(``recipients``) shows while it runs. The deliveries then go out like any other."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sesame.jobs import service as jobs
from sesame.kit.db import write_intent
from sesame.models import Campaign, CampaignStatus
from sesame.notifications import catalog
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.service import CAMPAIGN_JOB
from sesame.notifications.triggers import delivery_row
from sesame.runtime import Runtime

PAGE = 1000  # residents per transaction
CATEGORY = "announcements"


async def queue_page(runtime: Runtime, campaign_id: UUID) -> bool:
    """Queue the next page of the campaign's residents; False once there are none left."""
    with write_intent():
        async with runtime.session_factory() as session:
            campaign = await session.get(Campaign, campaign_id, with_for_update=True)
            if campaign is None or campaign.status in (
                CampaignStatus.CANCELLED,
                CampaignStatus.QUEUED,
            ):
                return False
            now = runtime.clock.now()
            repository = NotificationRepository(session)
            after = UUID(campaign.cursor) if campaign.cursor else None
            rows = await repository.residents_page(campaign, now.date(), after, PAGE)
            if not rows:
                campaign.status, campaign.queued_at = CampaignStatus.QUEUED, now
                await session.commit()
                return False
            people = list(dict.fromkeys(row[0] for row in rows))
            choices = await repository.muted(people, CATEGORY)
            texts: dict[str, tuple[str, str]] = {}
            deliveries: list[dict[str, Any]] = []
            for person_id, locale, destination_id, kind in rows:
                choice = choices.get(person_id)
                if destination_id is None or (choice is not None and not choice.enabled):
                    continue
                if choice is not None and choice.channels and str(kind) not in choice.channels:
                    continue
                language = catalog.locale_of(locale)
                if language not in texts:
                    texts[language] = catalog.campaign_text(campaign.content, language)
                title, body = texts[language]
                deliveries.append(
                    delivery_row(
                        transaction_id=f"c{campaign.id.hex}-{destination_id.hex}",
                        partner_id=campaign.partner_id,
                        site_id=campaign.site_id,
                        event_type="campaign",
                        category=CATEGORY,
                        channel=str(kind),
                        person_id=person_id,
                        destination_id=destination_id,
                        campaign_id=campaign.id,
                        locale=language,
                        title=title,
                        body=body,
                        data={"campaign_id": str(campaign.id)},
                        now=now,
                    )
                )
            await repository.add_deliveries(deliveries)
            campaign.status = CampaignStatus.SENDING
            campaign.cursor = str(people[-1])
            campaign.recipients += len(deliveries)
            await session.commit()
    if runtime.notifier is not None:
        runtime.notifier.queued()
    return True


@jobs.handler(CAMPAIGN_JOB, own_transactions=True)
async def send_campaign(run: jobs.JobRun) -> None:
    campaign_id = UUID(run.payload["campaign_id"])
    while await queue_page(run.runtime, campaign_id):
        pass
