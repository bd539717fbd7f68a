"""The report, live: `polycascade dashboard`, and `/dashboard` on `serve`.

    GET /dashboard             the page (no data in it: it asks for the gateway key, kept for the tab)
    GET /dashboard/data.json   the report and the latest calls, for the key's tenant
                               (?run=…, ?hours=…; ?tenant=… for an admin key)

A tenant's key shows its own calls only; a key marked `admin: true` in the tenants file (or the one
key of POLYCASCADE_GATEWAY_KEY) sees every tenant. Open pages ask again every `--refresh` seconds; reads are
cached for a second, so many open tabs cost one query per scope, not one each.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._page import render, shell
from ._report_page import report_page
from ._wire import error
from .errors import ConfigError
from .ledger import Ledger
from .views import Scope, build_report, recent_calls

if TYPE_CHECKING:
    from polycascade.policies.config import Policy

    from .server import TenantKeys

__all__ = ["add_dashboard"]

PREFIX = "/dashboard"
CACHE_S = 1.0  # many tabs cost one query a second at most


def add_dashboard(
    app: web.Application,
    ledger: Ledger,
    keys: TenantKeys,
    policy: Policy | None = None,
    lang: str = "en",
    refresh_s: float = 15,
) -> None:
    """Mount the dashboard's two routes on `app`; open pages ask again every `refresh_s`."""
    views = _Views(ledger, keys, policy, lang)
    page: list[str] = []  # drawn at the first visit: a gateway without the `report` extra still serves

    async def index(_: web.Request) -> web.Response:
        if not page:
            try:
                page.append(render(shell(lang), live=f"{PREFIX}/data.json", refresh_s=refresh_s))
            except ConfigError as exc:
                return error(501, str(exc), "not_implemented")
        response = web.Response(text=page[0], content_type="text/html", headers=_NO_STORE)
        response.enable_compression()  # plotly.js is most of the page: 4.8 MB, about 1.5 MB gzipped
        return response

    app.router.add_get(PREFIX, index)
    app.router.add_get(f"{PREFIX}/", index)
    app.router.add_get(f"{PREFIX}/data.json", views.data)


_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _Views:
    def __init__(self, ledger: Ledger, keys: TenantKeys, policy: Policy | None, lang: str) -> None:
        self.ledger, self.keys, self.policy, self.lang = ledger, keys, policy, lang
        self._cache: dict[Scope, tuple[float, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def data(self, request: web.Request) -> web.Response:
        tenant = self.keys.tenant_for(request.headers.get("Authorization"))
        if tenant is None:
            return error(401, "invalid or missing API key", "authentication_error")
        try:
            scope = self._scope(request.query, tenant)
        except ConfigError as exc:
            return error(400, str(exc), "invalid_request_error", exc.parameter)
        response = web.json_response(await self._page(scope), headers=_NO_STORE)
        response.enable_compression()
        return response

    def _scope(self, query: Any, tenant: str) -> Scope:
        wanted = query.get("tenant")
        if tenant not in self.keys.admins:
            if wanted not in (None, tenant):
                raise ConfigError("a tenant's key shows its own calls only", parameter="tenant")
            wanted = tenant
        try:
            hours = float(query["hours"]) if "hours" in query else None
        except ValueError:
            raise ConfigError(f"hours {query['hours']!r}: a number of hours", parameter="hours") from None
        return Scope.of(self.policy, run_id=query.get("run"), tenant=wanted, since_hours=hours)

    async def _page(self, scope: Scope) -> dict[str, Any]:
        async with self._lock:  # one read per scope at a time; the others wait for its result
            cached = self._cache.get(scope)
            if cached is not None and time.monotonic() - cached[0] < CACHE_S:
                return cached[1]
            report = await build_report(self.ledger, scope, self.policy)
            calls = await recent_calls(self.ledger, scope, timezone=report["timezone"])
            page = report_page(report, calls, self.lang)
            self._cache = {scope: (time.monotonic(), page)}  # the latest scope only: memory stays flat
            return page
