"""A campaign made through the service, as ``createCampaign`` makes one, with the defaults the
tests share: the template's latest version, no shared variables, the viewer's own address,
no pacing unless asked, sent at once, no tracking unless asked."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.bootstrap import System
from app.domain.viewer import Viewer
from app.services.campaigns import lists
from app.services.campaigns.lists import Recipient
from app.services.delivery.parcels import members


async def create_campaign(
    system: System,
    viewer: Viewer,
    name: str,
    template_key: str,
    *,
    rate_per_minute: int | None = None,
    track_clicks: bool = False,
) -> dict[str, Any]:
    return await system.campaigns.create(
        viewer,
        name=name,
        template_key=template_key,
        template_version=None,
        variables={},
        from_=None,
        rate_per_minute=rate_per_minute,
        send_at=None,
        track_opens=False,
        track_clicks=track_clicks,
    )


async def campaign_messages(db: Any, campaign_id: ObjectId) -> list[dict[str, Any]]:
    """Every message of a campaign stored for delivery: its rows, and the members of its
    parcels still queued (app/services/delivery/parcels.py), each as a row."""
    found = await db.recipients.find(
        {"$or": [{"campaign_id": campaign_id}, {"parcel.campaign_id": campaign_id}]}
    ).to_list()
    return [r for r in members(found) if r.get("campaign_id") == campaign_id]


async def campaign_recipients(db: Any, campaign_id: ObjectId) -> list[Recipient]:
    """Every recipient of a campaign's list, in order, read from its parts
    (app/services/campaigns/lists.py)."""
    parts = await db.campaign_lists.find({"campaign_id": campaign_id}).sort("seq", 1).to_list()
    return [r for p in parts for r in lists.recipients_of(p)]
