"""The CRM: the account context (accounts with owner and team, special price agreements,
quotes) and the pricing approvals its account owners decide."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from orderflow.integrations.http import OrderFlowHttpHook


class CrmHook(OrderFlowHttpHook):
    """The CRM, through its HTTP Connection (``crm_default``; host = the CRM API's base URL;
    extras read by name: ``timeout``).

    :param conn_id: the Connection id (default ``crm_default``).
    """

    system = "CRM"
    conn_name_attr = "crm_conn_id"
    default_conn_name = "crm_default"
    hook_name = "OrderFlow CRM"

    def extract(
        self, entity: str, *, changed_since: str | None = None, page_size: int = 5000
    ) -> Iterator[dict]:
        """Every ``accounts`` / ``agreements`` / ``quotes`` row, changed after
        ``changed_since`` if given."""
        offset: int | None = 0
        while offset is not None:
            params: dict[str, Any] = {"offset": offset, "limit": page_size}
            if changed_since:
                params["changed_since"] = changed_since
            page = self.call("GET", f"/{entity}", params=params)
            yield from page["items"]
            offset = page["next_offset"]

    def request_approval(self, request: dict, *, idempotency_key: str) -> dict:
        """Ask the account's owner to approve a price; the answer names the request."""
        return self.call(
            "POST", "/approval-requests", json=request, idempotency_key=idempotency_key
        )

    def decisions(self, after: int, limit: int = 200) -> dict:
        """Decisions taken in the CRM after the cursor ``after`` (``decision_seq``), in order:
        ``{"items": [...], "cursor": n, "more": bool}``."""
        return self.call("GET", "/approval-decisions", params={"after": after, "limit": limit})
