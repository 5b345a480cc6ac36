"""CRM operators: the account-context sync, approval requests and the CRM's decisions.
Thin glue over ``orderflow.crm``; XCom carries counts only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orderflow.operators.operations import _StoreOperator
from orderflow.operators.processing import _ctx


class _CrmOperator(_StoreOperator):
    """:param crm_conn_id: the CRM's HTTP Connection. Templated. Default ``crm_default``.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``."""

    template_fields: Sequence[str] = ("store_conn_id", "crm_conn_id")
    ui_color = "#e3f0f7"

    def __init__(self, *, crm_conn_id: str = "crm_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crm_conn_id = crm_conn_id

    def hook(self):
        from orderflow.integrations.crm import CrmHook

        return CrmHook(self.crm_conn_id)


class SyncAccountContextOperator(_CrmOperator):
    """Sync accounts (owner, team), special price agreements and quotes from the CRM into
    the store (incremental by changed-since; ``full_refresh`` re-reads everything).

    :param full_refresh: templated; "True"/True for a full extract.
    """

    template_fields: Sequence[str] = (*_CrmOperator.template_fields, "full_refresh")

    def __init__(self, *, full_refresh: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.full_refresh = full_refresh

    def run(self, conn, context):
        from orderflow import crm

        full = str(self.full_refresh).lower() in ("true", "1", "yes")
        results = crm.sync_account_context(
            conn, self.hook(), full=full, run_id=context["ti"].run_id
        )
        return {r.entity: {"rows": r.rows, "changed": r.changed} for r in results}


class RequestCrmApprovalsOperator(_StoreOperator):
    """Queue a CRM approval request (outbox, keyed by exception) for every open pricing hold
    of a CRM account that has none yet, with the account's team on the exception."""

    ui_color = "#e3f0f7"

    def run(self, conn, context):
        from orderflow import crm

        return {"queued": crm.request_missing(conn)}


class ApplyCrmDecisionsOperator(_CrmOperator):
    """Read the CRM's approval decisions after the stored cursor and apply each exactly once:
    approved resolves the pricing hold (audited as the CRM user), rejected keeps and
    escalates it."""

    def run(self, conn, context):
        from orderflow import crm

        return crm.apply_decisions(conn, self.hook(), _ctx(context, claimed=False)).as_xcom()
