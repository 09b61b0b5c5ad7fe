"""Domain verification (seed §17): look a hosted domain's SPF, DKIM, DMARC and MX records up
and compare them with the records we ask its owner to publish (``AccountService.dns_records``).

The result is kept on the domain's document (``verification``) so that creating a campaign
reads it without a DNS lookup; ``verifyDomain``, ``mailhub domains verify`` and the daily job
refresh it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.adapters.dns_resolver import DnsResolver, LookupStatus
from app.adapters.mongo import Mongo
from app.domain.domain_checks import (
    RecordCheck,
    check_dkim,
    check_dmarc,
    check_mx,
    check_spf,
    verified,
)
from app.domain.errors import NotFound
from app.domain.viewer import Viewer
from app.services.accounts import AccountService


class DomainVerifier:
    def __init__(self, mongo: Mongo, accounts: AccountService, resolver: DnsResolver) -> None:
        self.db = mongo.db
        self.accounts = accounts
        self.resolver = resolver

    async def is_verified(self, domain: str) -> bool:
        doc = await self.db.domains.find_one({"_id": domain.lower()}, {"verification": 1})
        return bool(doc and (doc.get("verification") or {}).get("verified"))

    async def viewer_domains(self, viewer: Viewer) -> list[dict[str, Any]]:
        """The hosted domains of the viewer's addresses, with their last verification."""
        addresses = await self.accounts.addresses_of(viewer.user_id)
        names = sorted({a.rpartition("@")[2] for a in addresses})
        return await self.db.domains.find({"_id": {"$in": names}}).sort("_id", 1).to_list()  # type: ignore[no-any-return]

    async def verify_for(self, viewer: Viewer, name: str) -> dict[str, Any]:
        domain = name.strip().lower().rstrip(".")
        if domain not in {d["_id"] for d in await self.viewer_domains(viewer)}:
            raise NotFound(f"{domain} is not a domain of your addresses")
        return await self.verify(domain)

    async def verify(self, domain: str) -> dict[str, Any]:
        """Look the records up now; store and return the domain document."""
        doc = await self.db.domains.find_one({"_id": domain})
        if doc is None:
            raise NotFound(f"{domain} is not hosted here")
        checks = await self.check(doc)
        verification = {
            "verified": verified(checks),
            "checked_at": datetime.now(UTC),
            "records": [check_doc(c) for c in checks],
        }
        await self.db.domains.update_one({"_id": domain}, {"$set": {"verification": verification}})
        return {**doc, "verification": verification}

    async def check(self, doc: dict[str, Any]) -> list[RecordCheck]:
        domain, host = doc["_id"], self.accounts.settings.hostname
        expected = {(r.type, r.name): r.value for r in self.accounts.dns_records(doc)}
        dkim_name = f"{doc['dkim']['selector']}._domainkey.{domain}"
        spf_txt = await self._txt(domain)
        mx = await self.resolver.mx(domain)
        return [
            check_spf(domain, host, spf_txt, expected[("TXT", domain)]),
            check_dkim(dkim_name, await self._txt(dkim_name), expected[("TXT", dkim_name)]),
            check_dmarc(
                f"_dmarc.{domain}",
                await self._txt(f"_dmarc.{domain}"),
                expected[("TXT", f"_dmarc.{domain}")],
            ),
            check_mx(
                domain,
                host,
                mx.hosts if mx.status == LookupStatus.OK and not mx.implicit else (),
                expected[("MX", domain)],
            ),
        ]

    async def _txt(self, name: str) -> tuple[str, ...]:
        result = await self.resolver.txt(name)
        return result.records if result.status == LookupStatus.OK else ()

    async def verify_all(self) -> int:
        """The daily re-check of every hosted domain; returns how many are verified."""
        count = 0
        async for d in self.db.domains.find({}, {"_id": 1}):
            count += bool((await self.verify(d["_id"]))["verification"]["verified"])
        return count


def check_doc(c: RecordCheck) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "type": c.type,
        "name": c.name,
        "value": c.expected,
        "status": c.status,
        "found": list(c.found),
        "detail": c.detail,
    }
