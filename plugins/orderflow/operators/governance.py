"""Operator of the ``rule_whatif`` DAG: replay a candidate rule-set version against a window
of history (``orderflow.governance.whatif``), with no side effects outside its own tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.settings import STORE_CONN_ID


class RuleWhatIfOperator(BaseOperator):
    """Replay candidate versions against the orders received in [window_from, window_to).

    :param candidates: candidate YAML files (under a directory named after the rule set, or
        with a ``rule_set:`` key) or stored versions (``pricing@2026.12.1``). Templated.
    :param candidate_yaml: a candidate pasted as YAML text, with a ``rule_set:`` key. Templated.
    :param window_from: ISO date-time (UTC when no zone is given; empty: seven days before
        ``window_to``). Templated.
    :param window_to: ISO date-time, exclusive (empty: now). Templated.
    :param store_conn_id: the operational store. Templated.
    :return: (XCom) the what-if run id, the candidates, totals and how many orders differ.
    """

    template_fields: Sequence[str] = (
        "candidates",
        "candidate_yaml",
        "window_from",
        "window_to",
        "store_conn_id",
    )
    ui_color = "#f3ecd9"

    def __init__(
        self,
        *,
        candidates: str | list[str] = "",
        candidate_yaml: str = "",
        window_from: str = "",
        window_to: str = "",
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.candidates = candidates
        self.candidate_yaml = candidate_yaml
        self.window_from = window_from
        self.window_to = window_to
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from datetime import UTC, datetime, timedelta

        from airflow.sdk.exceptions import AirflowFailException

        from orderflow import governance
        from orderflow.operators.decisions import _user
        from orderflow.store import db

        def when(value: str) -> datetime:
            at = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
            return at if at.tzinfo else at.replace(tzinfo=UTC)

        specs = self.candidates
        if isinstance(specs, str):
            specs = [s for s in specs.replace(",", " ").split() if s]
        conn = db.connect(self.store_conn_id)
        try:
            found = [governance.candidate(conn, s) for s in specs]
            if (self.candidate_yaml or "").strip():
                found.append((governance.candidate_from_text(self.candidate_yaml), "pasted"))
            ti = context["ti"]
            end = when(self.window_to) if self.window_to else datetime.now(UTC)
            start = when(self.window_from) if self.window_from else end - timedelta(days=7)
            result = governance.whatif(
                conn,
                [c for c, _ in found],
                start,
                end,
                requested_by=_user(context),
                sources=[s for _, s in found],
                dag_id=ti.dag_id,
                run_id=ti.run_id,
            )
        except (governance.GovernanceRefused, ValueError) as exc:
            raise AirflowFailException(str(exc)) from exc  # a retry would not change the answer
        finally:
            conn.close()
        summary = result.summary()
        self.log.info("what-if: %s", summary)
        for d in result.diffs[:50]:
            self.log.info(
                "%s: %s",
                d["order_id"],
                "; ".join(f"{f} {d['current'][f]} -> {d['candidate'][f]}" for f in d["changed"]),
            )
        return summary
