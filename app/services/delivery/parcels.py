"""Parcels: a campaign batch's mail to one destination domain, queued as one document.

A campaign batch (``campaigns/sender.py``) used to insert one ``recipients`` row per remote
recipient, and the outcome writer updated that row once it was delivered: two writes of the
same document, the update the dearest write of a recipient's life on SecantusDB
(docs/benchmarks.md "Twentieth session"). Now the batch inserts one *parcel* per destination
domain: a ``recipients`` document that carries its members' rows (``parcel``), queued for the
lanes like any row (``domain``, ``delivery_status``, ``next_attempt_at``: the lane index).

- The lanes' pull rounds read a parcel as the rows it carries (``members``): each member is
  a campaign row as before (its ``_id`` is its campaign recipient's, its ``message_id`` the
  same, its ``raw`` the rendered MIME), with ``parcel_id`` naming the parcel.
- A member leaves its parcel with its first outcome of any kind — delivered, bounced,
  deferred, suppressed, or given back unattempted — in the outcome's transaction
  (``OutcomeWriter._move_out``): pulled from the parcel (the parcel deleted once it holds
  nothing more), only if the parcel still holds every member written (that is who owns
  them), and inserted as an ordinary row in its new state. From then on it is ordinary
  outbound mail (a deferred member's retries go through the row).
- A member is never in its parcel and a row at once, so a worker killed mid-parcel leaves
  the rest in the parcel for the next holder of the domain, and nothing twice.

A parcel's ``_id`` is ``"parcel:" + its first member's id``: a batch replayed after a crash
fails on it (as it failed on the rows' ids before). Its ``message_id`` is its first member's
id (the sweep's job ids need one). It has no ``campaign_id`` (the campaign's delivery counts
are of rows: its members count as queued in the campaign recipients' states until their
first outcome) and no ``address``.
"""

from __future__ import annotations

from typing import Any

PREFIX = "parcel:"


def parcels_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One parcel per destination domain of ``rows`` (queued campaign rows to remote
    addresses, as the batch built them), in the rows' order."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_domain.setdefault(row["domain"], []).append(row)
    out = []
    for domain, members in by_domain.items():
        first = members[0]
        out.append(
            {
                "_id": PREFIX + str(first["_id"]),
                "message_id": first["_id"],
                "domain": domain,
                "local_user_id": None,
                "delivery_status": first["delivery_status"],
                "attempts": 0,
                "next_attempt_at": first["next_attempt_at"],
                "lease_until": None,
                "sender_user_id": first["sender_user_id"],
                "created_at": first["created_at"],
                "updated_at": first["updated_at"],
                "size": sum(int(m.get("size") or 0) for m in members),
                "parcel": members,
            }
        )
    return out


def members(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` as rows: a parcel as the members it still carries (each due when the parcel
    is, and naming it: ``parcel_id``), any other row as itself."""
    out: list[dict[str, Any]] = []
    for doc in docs:
        if "parcel" not in doc:
            out.append(doc)
            continue
        out += [
            {**m, "next_attempt_at": doc["next_attempt_at"], "parcel_id": doc["_id"]}
            for m in doc["parcel"]
        ]
    return out


def as_row(member: dict[str, Any]) -> dict[str, Any]:
    """A member as the row it becomes when it leaves its parcel (before its outcome's
    fields are applied)."""
    return {k: v for k, v in member.items() if k != "parcel_id"}
