"""Expected outcome of the X12 reader for every file of the external corpus
(the directory ``ORDERFLOW_X12_CORPUS`` names; its ``SOURCES.tsv`` says what each file is).

Each entry says what is *correct*, decided per file with the reason, not what the code
happens to do:

- ``accepted``: :attr:`X12Result.accepted` (every set accepted, possibly with errors noted).
- ``orders`` / ``lines``: canonical orders produced and their lines in total.
- ``errors``: every finding's code, sorted (repeats count).
- ``ta1``: per interchange, (TA104, TA105) of our TA1, or None when we send none.
- ``ak9``: per functional group, AK901 of our 997, or None when we send no 997 (received
  acknowledgments are never acknowledged; a rejected interchange is answered by the TA1).
- ``sets``: AK5 outcome per transaction set, in file order.

Decisions that the entries below apply (also in the report and the module docstrings):

1. Mis-padded ISA (ISA06 of 14 characters in the Adobe and 860 samples): the fields are
   found by counting element separators, the interchange is read, and the deviation is noted
   (``x12.isa_padding``, TA1 E with note 006 "invalid sender id"): nothing is ambiguous once
   the separators are counted, and "E" tells the partner not to resend.
2. Envelope count or control-number mismatches reject the envelope they belong to (TA1 R /
   AK9 R / AK5 R): data may have been lost, so the partner must resend.
3. Transaction sets other than 850 and 860 (855, 856, 810, 940) are rejected with AK5 R 1
   "not supported": the EDI channel takes purchase orders and their changes. 997s are read as acknowledgments
   of our outbound documents and are never acknowledged themselves.
4. CTT01 ≠ number of PO1 segments and X12 syntax notes broken in segments we read (PO1
   product id pairs, PO4, N1) are noted (AK5 E); the order is created.
5. A PO1 with quantity 0 is left out of the order and recorded (``x12.850_zero_quantity``) but
   the 997 accepts the set (AK5 A): it is valid X12, as bots' own 997 for that file says.
"""

from __future__ import annotations

from typing import Any

UNSUPPORTED = "x12.unsupported_transaction"


def X(**kw: Any) -> dict[str, Any]:
    return kw


EXPECTED: dict[str, dict[str, Any]] = {
    # ---------------------------------------------------------------- bots-plugins
    "bots-plugins__850-004010-01.x12": X(
        accepted=True,
        orders=1,
        lines=8,
        errors=[],
        ta1=[("A", "000")],
        ak9=["A"],
        sets="A",
        why="ISA12 00302, '@' component, LF as terminator; PO1 with empty line numbers. "
        "ISA14=1 asks for a TA1. bots' 997 (supplier_outfile_997_14) accepts it too.",
    ),
    "bots-plugins__850-004010-08.x12": X(
        accepted=True,
        orders=2,
        lines=11,
        errors=[],
        ta1=[("A", "000")],
        ak9=["A"],
        sets="AA",
        why="Hard-wrapped at 80 columns (even the ISA and GS08 are split): every LF is "
        "removed since '~' is the terminator; 3 + 8 PO1 lines, CTT 3 and 8 agree.",
    ),
    "bots-plugins__850-004010-10.x12": X(
        accepted=True,
        orders=2,
        lines=2,
        errors=[],
        ta1=[None],
        ak9=["A"],
        sets="AA",
        why="Terminator 0x15 followed by CRLF, component '}'; two drop-ship POs. bots' 997 "
        "(supplier_outfile_997_7) accepts both sets.",
    ),
    "bots-plugins__850-004010-12.x12": X(
        accepted=True,
        orders=3,
        lines=10,
        errors=[],
        ta1=[None, None, None],
        ak9=["A", "A", "A"],
        sets="AAA",
        why="Three interchanges in one file; zero-padded counts (SE*0000000046, GE*000001, "
        "IEA*00001) are numbers and match. bots' 997s for groups 150-152 accept all.",
    ),
    "bots-plugins__850-004010VICS-01.x12": X(
        accepted=True,
        orders=4,
        lines=169,
        errors=[],
        ta1=[None],
        ak9=["A"],
        sets="AAAA",
        why="DEL (0x7F) element separator and 0x15 terminator on one line; 169 PO1 lines in "
        "4 sets, CTT agrees. bots' 997 (supplier_outfile_997_4): AK9*A*4*4*4.",
    ),
    "bots-plugins__850-02.x12": X(
        accepted=True,
        orders=4,
        lines=18,
        errors=["x12.850_zero_quantity"],
        ta1=[None],
        ak9=["A"],
        sets="AAAA",
        why="'|' element separator. PO 11223344 line 9 orders quantity 0: left out of the "
        "order (10 of 11 lines kept) and recorded; valid X12, so the 997 accepts all four "
        "sets like bots' supplier_outfile_997_3 (AK9*A*4*4*4).",
    ),
    "bots-plugins__855-004010UCS-01.x12": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED] * 6,
        ta1=[None],
        ak9=["R"],
        sets="RRRRRR",
        why="Six 855s (a supplier's PO acknowledgments) are not inbound orders: AK5 R 1.",
    ),
    "bots-plugins__997-004010VICS-01.x12": X(
        accepted=True,
        orders=0,
        lines=0,
        errors=[],
        ta1=[None],
        ak9=[None],
        sets="A",
        why="A valid 997 (0x15 terminator) acknowledging an 855: read, not acknowledged.",
    ),
    "bots-plugins__997_1.x12": X(
        accepted=True,
        orders=0,
        lines=0,
        errors=[],
        ta1=[("A", "000")],
        ak9=[None],
        sets="A",
        why="A valid 997 in 00403 with ISA11 '^'; ISA14=1 asks for a TA1.",
    ),
    # ---------------------------------------------------------------- EdiEngine
    "ediengine__850.Composite.SLN.OK.edi": X(
        accepted=True,
        orders=1,
        lines=2,
        errors=[],
        ta1=[None],
        ak9=["A"],
        sets="A",
        why="SLN sub-lines with a composite UOM: sub-line detail stays out of the canonical "
        "lines; EdiEngine asserts 0 errors, so do we.",
    ),
    "ediengine__850.SyntaxNotes.ERR.edi": X(
        accepted=True,
        orders=1,
        lines=6,
        errors=["x12.syntax_note"] * 3,
        ta1=[None],
        ak9=["E"],
        sets="E",
        why="Exactly EdiEngine's 3 syntax-note errors: PO1 P0607 at segment 13, PO4 C0506 "
        "and P0607 at segment 30. Noted (AK5 E); the order is still usable.",
    ),
    "ediengine__856.Crossdock.OK.edi": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED],
        ta1=[None],
        ak9=["R"],
        sets="R",
        why="A well-formed 856 ship notice: not an inbound order, AK5 R 1.",
    ),
    "ediengine__ControlNumbersMismatch.edi": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[
            "x12.ge_control_mismatch",
            "x12.iea_control_mismatch",
            "x12.st_se_control_mismatch",
            UNSUPPORTED,
        ],
        ta1=[("R", "001")],
        ak9=[None],
        sets="R",
        why="ISA13/IEA02, GS06/GE02 and ST02/SE02 all differ (EdiEngine reports the same "
        "three); the interchange is rejected with TA1 note 001, so no 997.",
    ),
    "ediengine__WrongGroupsAndTranCount.edi": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=["x12.ge_count_mismatch", "x12.iea_count_mismatch", UNSUPPORTED],
        ta1=[("R", "021")],
        ak9=[None],
        sets="R",
        why="IEA01=2 with one group, GE01=2 with one set (EdiEngine: 'Expected 2 groups. "
        "Found 1' / 'Expected 2 transactions'); TA1 R 021.",
    ),
    # ---------------------------------------------------------------- OopFactory
    "oopfactory__810_2011110815164104.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED],
        ta1=[None],
        ak9=["R"],
        sets="R",
        why="An 810 invoice: not an inbound order.",
    ),
    "oopfactory__810_Example3_MultiInvoice.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED] * 2,
        ta1=[None],
        ak9=["R"],
        sets="RR",
        why="Two 810s; 00403 with '^' repetition separator read fine, sets not supported.",
    ),
    "oopfactory__810_Example5_Walmart.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=["x12.isa_version_unknown", UNSUPPORTED],
        ta1=[("E", "017")],
        ak9=["R"],
        sets="R",
        why="ISA12 '00040' is no version: noted (TA1 E 017, also asked for by ISA14=1); CRLF "
        "terminators; the 810 itself is not supported.",
    ),
    "oopfactory__850_Example1_PGWGlass.txt": X(
        accepted=True,
        orders=0,
        lines=0,
        changes=[("replace", 4)],
        errors=[],
        ta1=[None],
        ak9=["A"],
        sets="A",
        why="BOM, CRLF, indentation, '|' terminator and '~' component separator; BEG01 05 "
        "(replace): a change replacing the order S41000439 with its 4 lines, not a new "
        "order; CTT*4 agrees.",
    ),
    "oopfactory__850_Example2_Adobe_TLP.txt": X(
        accepted=True,
        orders=1,
        lines=1,
        errors=[],
        ta1=[None],
        ak9=["A"],
        sets="A",
        why="'~' element separator and bare CRLF as terminator; many N1 loops (ST/BT/BY "
        "mapped, DU/EN/IA/PO kept as notes).",
    ),
    "oopfactory__850_Example3_Adobe_CLP.txt": X(
        accepted=True,
        orders=1,
        lines=2,
        errors=["x12.isa_padding"],
        ta1=[("E", "006")],
        ak9=["A"],
        sets="A",
        why="Decision 1: ISA06 has 14 characters (ISA 105 long), '~' elements and '*' "
        "terminator; counted separators give the right delimiters and SE*75 agrees. Line-level "
        "N1*ST repeat the header ship-to (case aside), so no line ship-to finding.",
    ),
    "oopfactory__850_Example4_Adobe_ShrinkWrapped.txt": X(
        accepted=True,
        orders=1,
        lines=1,
        errors=["x12.isa_padding"],
        ta1=[("E", "006")],
        ak9=["A"],
        sets="A",
        why="Decision 1: ISA06 14 characters; ISA16 '>' is followed by a space and CRLF: the "
        "space is padding, CRLF terminates segments. ISA09 vs GS04 date difference is legal.",
    ),
    "oopfactory__855_855SSimmons.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED] * 2,
        ta1=[None],
        ak9=["R"],
        sets="RR",
        why="Two 855s: not inbound orders.",
    ),
    "oopfactory__856_Example1.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED],
        ta1=[("A", "000")],
        ak9=["R"],
        sets="R",
        why="'~' elements, '`' component, '*' terminator read fine; ISA14=1 asks for a TA1; "
        "the 856 is not supported.",
    ),
    "oopfactory__856_Example3.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED],
        ta1=[None],
        ak9=["R"],
        sets="R",
        why="Terminator U+2026 (3 bytes in UTF-8) is one character after decoding; 856 not "
        "supported.",
    ),
    "oopfactory__856_Example4.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[UNSUPPORTED],
        ta1=[None],
        ak9=["R"],
        sets="R",
        why="'|' component separator; 856 not supported (its empty HL02 parents are not ours "
        "to judge).",
    ),
    "oopfactory__860_Example1.txt": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[
            "x12.element_invalid",
            "x12.element_invalid",
            "x12.element_invalid",
            "x12.isa_padding",
            "x12.se_count_mismatch",
        ],
        changes=[],
        ta1=[("E", "006")],
        ak9=["R"],
        sets="R",
        why="Short ISA06 (decision 1) and a missing '~' after N1*BY: N1 and N3 run together, "
        "so SE01 10 ≠ 9 segments counted (AK5 R 4; the message names the likely cause). The "
        "860 is read (po860): BCH06 is the placeholder 'PO DATE', not a date (AK4 8), and the "
        "run-together N1 has N105/N106 too long (AK4 5).",
    ),
    "oopfactory__TA1_TechnicalAcknowledgment_SampleFromJeffN825.txt": X(
        accepted=True,
        orders=0,
        lines=0,
        errors=[],
        ta1=[None],
        ak9=[],
        sets="",
        why="An interchange holding only a partner's TA1 (R 006) and IEA01=0: read into "
        "received_ta1; the trailing '>+' is an empty composite, harmless.",
    ),
    # ---------------------------------------------------------------- StAEDI
    "staedi__extraDelimiter997.edi": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=["x12.997_invalid"],
        ta1=[None],
        ak9=[None],
        sets="R",
        why="The 997's AK302 holds repeated composite text instead of a segment position: it "
        "cannot be matched to anything we sent.",
    ),
    "staedi__invalid997.edi": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=["x12.997_invalid"],
        ta1=[None],
        ak9=[None],
        sets="R",
        why="AK101 'HC NOT IN CODESET' and AK402 '66 NON NUMERIC' (StAEDI flags AK402 too).",
    ),
    "staedi__invalid997_min.edi": X(
        accepted=False,
        orders=0,
        lines=0,
        errors=[
            "x12.997_invalid",
            "x12.ge_control_mismatch",
            "x12.gs_invalid_value",
            "x12.gs_invalid_value",
        ],
        ta1=[None],
        ak9=[None],
        sets="R",
        why="GS04 'BAD_DATE' and GS05 '295335' noted, GE02 not GS06 (group rejected), AK101 "
        "not a code.",
    ),
    "staedi__invoice810_po850_dual.edi": X(
        accepted=False,
        orders=1,
        lines=4,
        errors=["x12.syntax_note", UNSUPPORTED, UNSUPPORTED],
        ta1=[None],
        ak9=["R", "E"],
        sets="RRE",
        why="Two groups: the 810s are rejected (AK9 R), the 003010 850 is read with six-digit "
        "dates (BEG05 040317 → 2004-03-17) and noted for N1*ST with qualifier 92 but no id "
        "(P0304).",
    ),
}

# bots' own 997s for some of the 850 samples: ours must say the same (AK1/AK2/AK5/AK9),
# envelope ids, dates and control numbers aside.
BOTS_997: dict[str, list[str]] = {
    "bots-plugins__850-004010-01.x12": ["bots-plugins__supplier_outfile_997_14.x12"],
    "bots-plugins__850-004010-10.x12": ["bots-plugins__supplier_outfile_997_7.x12"],
    "bots-plugins__850-004010VICS-01.x12": ["bots-plugins__supplier_outfile_997_4.x12"],
    "bots-plugins__850-02.x12": ["bots-plugins__supplier_outfile_997_3.x12"],
    "bots-plugins__850-004010-12.x12": [
        "bots-plugins__supplier_outfile_997_9.x12",
        "bots-plugins__supplier_outfile_997_12.x12",
    ],
}
