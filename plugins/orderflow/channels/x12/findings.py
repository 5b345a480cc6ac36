"""One finding about an X12 file, with the severity and the acknowledgment codes it implies.

A finding becomes an :class:`~orderflow.domain.models.IntakeError` for people and the
store; its severity and codes decide the TA1 (``ta1_note``), the 997 AK9 (``ak9_code``) and
AK5 (``ak5_code``) and where AK3/AK4 point (``segment_note``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orderflow.domain.models import IntakeError

from .results import SegmentNote

Severity = Literal["reject", "note", "info"]
"""``reject``: the level it belongs to is not used (R). ``note``: used, but the partner is
told (E). ``info``: used; recorded for the people who handle the order, not an X12 error."""


@dataclass(slots=True)
class Finding:
    code: str
    message: str
    where: str | None = None
    action: str | None = None
    severity: Severity = "reject"
    ta1_note: str | None = None
    ak9_code: str | None = None
    ak5_code: str | None = None
    segment_note: SegmentNote | None = None

    def error(self) -> IntakeError:
        return IntakeError(
            code=self.code, message=self.message, where=self.where, action=self.action
        )


RESEND = "Ask the partner to correct it and resend the interchange."
