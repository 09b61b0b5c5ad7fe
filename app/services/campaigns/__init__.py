"""Bulk campaigns (issue 15): the store, the batch sender, tracking and domain verification."""
