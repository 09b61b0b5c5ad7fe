"""A campaign made through the service, as ``createCampaign`` makes one, with the defaults the
tests share: the template's latest version, no shared variables, the viewer's own address,
no pacing unless asked, sent at once, no tracking unless asked."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.bootstrap import System
from app.domain.viewer import Viewer
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
