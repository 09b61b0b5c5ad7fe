from app.adapters.dns_resolver import DnsResolver, LookupStatus
from tests.support.dnsmasq import DnsServer

LONG_DKIM = "v=DKIM1; k=rsa; p=" + "A" * 392


async def test_mx_lookup_against_a_real_dns_server():
    with DnsServer(
        mx={"two.test": [(20, "mx2.two.test"), (10, "mx1.two.test")], "null.test": [(0, ".")]},
        a={"mx1.two.test": "127.0.0.1", "mx2.two.test": "127.0.0.2", "bare.test": "127.0.0.3"},
        txt={"two.test": ["v=spf1 -all"], "s1._domainkey.two.test": [LONG_DKIM]},
    ) as dns:
        r = DnsResolver([dns.address])
        mx = await r.mx("two.test")
        assert mx.status is LookupStatus.OK and mx.hosts == ("mx1.two.test", "mx2.two.test")
        assert (await r.mx("null.test")).null_mx
        implicit = await r.mx("bare.test")
        assert implicit.implicit and implicit.hosts == ("bare.test",)
        assert (await r.mx("nowhere.test")).status is LookupStatus.NXDOMAIN
        assert await r.addresses("mx2.two.test") == ["127.0.0.2"]
        assert (await r.txt("two.test")).records == ("v=spf1 -all",)
        assert (await r.txt("s1._domainkey.two.test")).records == (LONG_DKIM,)
