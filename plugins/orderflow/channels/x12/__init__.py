"""X12 EDI channel: read interchanges of 850 purchase orders into canonical orders, and
build the 997/TA1 acknowledgments that go back.

Usage::

    result = parse(data, partner_id="ACME", source_ref="inbox/po_0412.edi")
    result.orders           # canonical Order objects (accepted sets only)
    result.accepted         # every set accepted (perhaps with errors noted)?
    result.error_list       # IntakeError for every finding, file → interchange → group → set
    result.acknowledgments  # our TA1/997 interchanges (provisional control numbers)
    build_997(group, interchange, control_number=n, now=t)  # re-render with store numbers

    for ev in X12Stream(data, partner_id="ACME"):  # the same, one set at a time
        ...  # TransactionResult per set, then GroupResult, then InterchangeResult

No library was used: the maintained Python X12 packages are HIPAA-specific (pyx12: 837/835
maps, versions 00401/00501 only, fixed-offset ISA that raises on anything else) or
unmaintained; none reads mis-padded, wrapped or newline-terminated real-world files without
raising. This reader is small, pure Python, linear-time and tested on a public corpus.
"""

from .ack import build_997, build_ta1
from .parser import MAX_BYTES, X12Stream, parse
from .reader import FastSet
from .results import (
    AckReceived,
    Delimiters,
    ElementNote,
    GroupResult,
    InterchangeResult,
    SegmentNote,
    TransactionResult,
    X12Result,
)

__all__ = [
    "MAX_BYTES",
    "AckReceived",
    "Delimiters",
    "ElementNote",
    "FastSet",
    "GroupResult",
    "InterchangeResult",
    "SegmentNote",
    "TransactionResult",
    "X12Result",
    "X12Stream",
    "build_997",
    "build_ta1",
    "parse",
]
