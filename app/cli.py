"""The `mailhub` command (CONTRACT.md): dev, api, worker, mx, domains, users, reindex."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app import loops
from app.config import ConfigError, Settings, load_settings
from app.domain.errors import DomainError

DEMO_DOMAIN = "demo.mailhub.test"
DEMO_USERS = [
    ("alice", "Alice Example", "alice-demo-pass"),
    ("bob", "Bob Example", "bob-demo-pass"),
]


def _settings(**overrides: Any) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _dev_secret(data_dir: Path) -> str:
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


async def _with_system(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    from app.bootstrap import build_system

    system = await build_system(settings)
    try:
        return await work(system)
    finally:
        await system.close()


# --- commands -----------------------------------------------------------------------------


def cmd_domains_add(args: argparse.Namespace) -> int:
    settings = _settings()

    async def work(system: Any) -> None:
        domain, records = await system.accounts.add_domain(args.domain)
        print(f"hosted domain {domain['_id']} (DKIM selector {domain['dkim']['selector']})")
        print("publish these DNS records:")
        for record in records:
            print("  " + record.zone_line())

    asyncio.run(_with_system(settings, work))
    return 0


def cmd_domains_list(args: argparse.Namespace) -> int:
    async def work(system: Any) -> None:
        for name in await system.accounts.domain_names():
            print(name)

    asyncio.run(_with_system(_settings(), work))
    return 0


def cmd_domains_verify(args: argparse.Namespace) -> int:
    """Look the domain's SPF, DKIM, DMARC and MX records up now (exit 1 when not verified)."""

    async def work(system: Any) -> bool:
        doc = await system.domain_verifier.verify(args.domain.strip().lower().rstrip("."))
        v = doc["verification"]
        print(f"{doc['_id']}: {'verified' if v['verified'] else 'NOT verified'}")
        for r in v["records"]:
            line = f"  {r['kind']:<5} {r['status']:<7} {r['name']} {r['type']}"
            print(line + (f"  ({r['detail']})" if r["detail"] else ""))
            if r["status"] != "ok":
                print(f"        publish: {r['value']}")
        return bool(v["verified"])

    return 0 if asyncio.run(_with_system(_settings(), work)) else 1


def cmd_users_create(args: argparse.Namespace) -> int:
    async def work(system: Any) -> None:
        user = await system.accounts.create_user(args.email, args.password, args.name)
        print(f"created user {user['email']} (id {user['_id']})")

    asyncio.run(_with_system(_settings(), work))
    return 0


def cmd_users_alias(args: argparse.Namespace) -> int:
    async def work(system: Any) -> None:
        await system.accounts.add_alias(args.email, args.alias)
        print(f"{args.alias} now delivers to {args.email}")

    asyncio.run(_with_system(_settings(), work))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings(http_host=args.host, http_port=args.port)
    missing = settings.missing_services()
    if missing:
        raise ConfigError(f"set {', '.join(missing)} (or run `mailhub dev` for embedded servers)")
    import uvicorn

    from app.logs import configure_logging
    from app.web.app import create_app

    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        ws="websockets-sansio",
        # events are small JSON frames: compression would cost ~50 KB of zlib state per socket
        ws_per_message_deflate=False,
        proxy_headers=True,
        log_level=settings.log_level.lower(),
        loop=settings.event_loop,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from jobs.worker import run_worker

    settings = _settings()
    missing = settings.missing_services()
    if missing:
        raise ConfigError(f"set {', '.join(missing)}")
    return run_worker(settings)


def cmd_mx(args: argparse.Namespace) -> int:
    from app.mx.server import run_mx

    settings = _settings(smtp_host=args.host, smtp_port=args.port)
    missing = settings.missing_services()
    if missing:
        raise ConfigError(f"set {', '.join(missing)}")
    return run_mx(settings)


def cmd_reindex(args: argparse.Namespace) -> int:
    return reindex_command(_settings())


def reindex_command(settings: Settings) -> int:
    """`mailhub reindex`: rebuild the search index while search keeps working."""

    async def work(system: Any) -> int:
        if system.search is None:
            print("mailhub: set MAILHUB_TYPESENSE_URL to use search")
            return 2
        report = await system.search.reindex()
        print(
            f"reindexed {report.documents} items into {report.collection} in "
            f"{report.seconds:.1f} s ({report.caught_up} changed during the copy; "
            f"previous collection {report.previous or 'none'} dropped)"
        )
        return 0

    result: int = asyncio.run(_with_system(settings, work))
    return result


def cmd_imap(args: argparse.Namespace) -> int:
    """`mailhub imap` (and `mailhub pop3`): mail clients on the same mailboxes (docs/imap.md)."""
    from app.imap.server import run_mail_clients

    pop3 = args.command == "pop3"
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["imap_host"] = args.host
    if args.port is not None:
        overrides["pop3_port" if pop3 else "imap_port"] = args.port
    settings = _settings(**overrides)
    missing = settings.missing_services()
    if missing:
        raise ConfigError(f"set {', '.join(missing)}")
    try:
        loops.run(run_mail_clients(settings, imap=not pop3, pop3=pop3), settings.event_loop)
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Everything in one process group: embedded servers (unless URLs are set), api, worker, mx."""
    data_dir = Path(args.data_dir).resolve()
    base = _settings(data_dir=data_dir)
    stack = None
    env: dict[str, Any] = {}
    if not (base.mongodb_uri and base.redis_url and base.typesense_url):
        from app.embedded import EmbeddedStack

        stack = EmbeddedStack(data_dir)
        print(f"starting embedded servers under {data_dir} ...", flush=True)
        stack.start(
            mongo=not base.mongodb_uri, redis=not base.redis_url, typesense=not base.typesense_url
        )
        if not base.mongodb_uri:
            env["mongodb_uri"] = stack.url("mongodb")
        if not base.redis_url:
            env["redis_url"] = stack.url("redis")
        if not base.typesense_url:
            env["typesense_url"] = stack.url("typesense")
            env["typesense_api_key"] = stack.typesense_api_key
    try:
        settings = _settings(
            data_dir=data_dir,
            http_port=args.http_port,
            smtp_port=args.smtp_port,
            imap_port=args.imap_port,
            pop3_port=args.pop3_port,
            # a developer's webhook receiver runs on this machine (production refuses that)
            webhook_allow_private=True,
            secret_key=base.secret_key.get_secret_value()
            if base.secret_key
            else _dev_secret(data_dir),
            **env,
        )
        return loops.run(_dev_main(settings, stack), settings.event_loop)
    except KeyboardInterrupt:
        return 130
    finally:
        if stack is not None:
            print("stopping embedded servers ...", flush=True)
            stack.stop()


async def _dev_main(settings: Settings, stack: Any) -> int:
    import uvicorn

    from app.bootstrap import build_system
    from app.logs import configure_logging
    from app.web.app import create_app

    configure_logging(settings)
    system = await build_system(settings)
    await _seed_demo(system)
    app = create_app(settings, system)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        ws="websockets-sansio",
        # events are small JSON frames: compression would cost ~50 KB of zlib state per socket
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    background = await _start_background(settings, system)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn exposes a flag only
        await asyncio.sleep(0.05)
    try:
        if server.started:
            _print_banner(settings, stack, background["urls"])
        await serving
    finally:
        for stop in background["stops"]:
            with contextlib.suppress(Exception):
                await stop()
        await system.close()
    return 0


def _print_banner(settings: Settings, stack: Any, urls: list[tuple[str, str]]) -> None:
    print("\nmailhub is running", flush=True)
    if stack is not None:
        for s in stack.servers:
            print(f"  {s.name:<10} {s.url}")
    print(f"  Webmail    http://{settings.http_host}:{settings.http_port}/")
    print(f"  GraphiQL   http://{settings.http_host}:{settings.http_port}/graphql")
    print(f"  REST       http://{settings.http_host}:{settings.http_port}/api/...")
    for name, url in urls:
        print(f"  {name:<10} {url}")
    print("  demo users (log in with the `login` mutation):")
    for local, _name, password in DEMO_USERS:
        print(f"    {local}@{DEMO_DOMAIN}  password: {password}")
    print("Ctrl-C stops everything.\n", flush=True)


async def _start_background(settings: Settings, system: Any) -> dict[str, Any]:
    """The worker and the MX run inside `mailhub dev` too, when those modules are present."""
    stops: list[Callable[[], Awaitable[Any]]] = []
    urls: list[tuple[str, str]] = []
    with contextlib.suppress(ImportError):
        from jobs.worker import start_embedded_worker

        stops.append(await start_embedded_worker(settings))
        urls.append(("worker", "arq (in process)"))
    with contextlib.suppress(ImportError):
        from app.mx.server import start_mx

        mx = await start_mx(settings, system)
        stops.append(mx.stop)
        urls.append(("MX (SMTP)", f"smtp://{settings.smtp_host}:{mx.port}"))
    from app.imap.server import start_mail_clients

    clients = await start_mail_clients(system, settings)
    stops.append(clients.close)
    urls.append(("IMAP", f"imap://{settings.imap_host}:{clients.imap_port}"))
    urls.append(("POP3", f"pop://{settings.imap_host}:{clients.pop3_port}"))
    return {"stops": stops, "urls": urls}


async def _seed_demo(system: Any) -> None:
    if await system.accounts.is_hosted(DEMO_DOMAIN):
        return
    await system.accounts.add_domain(DEMO_DOMAIN)
    for local, name, password in DEMO_USERS:
        with contextlib.suppress(DomainError):
            await system.accounts.create_user(f"{local}@{DEMO_DOMAIN}", password, name)


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailhub", description="mailhub email system")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything on embedded servers")
    dev.add_argument("--http-port", type=int, default=8000)
    dev.add_argument("--smtp-port", type=int, default=2525)
    dev.add_argument("--imap-port", type=int, default=1143)
    dev.add_argument("--pop3-port", type=int, default=1110)
    dev.add_argument("--data-dir", default=os.environ.get("MAILHUB_DATA_DIR", "./var"))
    dev.set_defaults(func=cmd_dev)

    api = sub.add_parser("api", help="the HTTP/GraphQL API server")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)
    sub.add_parser("worker", help="the arq worker (delivery, indexing, sweeps)").set_defaults(
        func=cmd_worker
    )
    mx = sub.add_parser("mx", help="the inbound SMTP server")
    mx.add_argument("--host")
    mx.add_argument("--port", type=int)
    mx.set_defaults(func=cmd_mx)
    for name, what in (("imap", "the IMAP server"), ("pop3", "the POP3 server (INBOX)")):
        server = sub.add_parser(name, help=f"{what} for mail clients")
        server.add_argument("--host")
        server.add_argument("--port", type=int)
        server.set_defaults(func=cmd_imap)
    sub.add_parser("reindex", help="rebuild the search index").set_defaults(func=cmd_reindex)

    domains = sub.add_parser("domains", help="hosted domains").add_subparsers(
        dest="action", required=True
    )
    add = domains.add_parser("add", help="host a domain and create its DKIM key")
    add.add_argument("domain")
    add.set_defaults(func=cmd_domains_add)
    domains.add_parser("list", help="list hosted domains").set_defaults(func=cmd_domains_list)
    verify = domains.add_parser("verify", help="check a domain's SPF, DKIM, DMARC, MX records")
    verify.add_argument("domain")
    verify.set_defaults(func=cmd_domains_verify)

    users = sub.add_parser("users", help="user accounts").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="create a user on a hosted domain")
    create.add_argument("email")
    create.add_argument("--password", required=True)
    create.add_argument("--name")
    create.set_defaults(func=cmd_users_create)
    alias = users.add_parser("alias", help="give a user another address")
    alias.add_argument("email")
    alias.add_argument("alias")
    alias.set_defaults(func=cmd_users_alias)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"mailhub: {e}", file=sys.stderr)
        return 2
    except DomainError as e:
        print(f"mailhub: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
