"""Which API-key scope each operation needs (docs/api.md, "API keys").

Deny by default: a root field not listed here cannot be used with an API key at all (only with
a person's login token). Keys never manage keys, log in, or change mailbox state (moves,
labels, spam training): those are a person's actions.
"""

from __future__ import annotations

SCOPES = ("send", "templates", "campaigns", "webhooks", "read")

_BY_SCOPE: dict[str, tuple[str, ...]] = {
    "send": ("sendEmail", "saveDraft", "deleteDraft", "sendDraft", "cancelSend"),
    "templates": (
        "templates",
        "template",
        "renderTemplate",
        "saveTemplate",
        "publishTemplate",
        "deleteTemplate",
    ),
    "campaigns": (
        "campaigns",
        "campaign",
        "createCampaign",
        "addCampaignRecipients",
        "startCampaign",
        "pauseCampaign",
        "resumeCampaign",
        "cancelCampaign",
        "campaignProgress",
    ),
    "webhooks": ("webhooks", "createWebhook", "deleteWebhook"),
    "read": (
        "me",
        "mailboxes",
        "messages",
        "message",
        "threads",
        "thread",
        "search",
        "state",
        "changes",
        "deliveryEvents",
        "events",
        "suppressions",
        "reputation",
        "domains",
        "mailboxEvents",
        "unreadCounts",
        "deliveryStatus",
    ),
}

ROOT_FIELD_SCOPES: dict[str, str] = {
    field: scope for scope, fields in _BY_SCOPE.items() for field in fields
}

# Introspection and __typename reveal nothing of the user's: any key may ask.
OPEN_FIELDS = frozenset({"__typename", "__schema", "__type"})


def scopes_needed(root_fields: list[str]) -> set[str | None]:
    """The scopes an operation selecting these root fields needs (None: not for API keys)."""
    return {ROOT_FIELD_SCOPES.get(f) for f in root_fields if f not in OPEN_FIELDS}


def check_scope_names(scopes: list[str]) -> list[str]:
    """The unknown names among ``scopes`` (empty when all are valid)."""
    return [s for s in scopes if s not in SCOPES]
