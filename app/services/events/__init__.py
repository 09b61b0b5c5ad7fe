"""The event log of a user's outgoing mail and the outbound webhooks that carry it."""
