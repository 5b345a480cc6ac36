"""Master data of the stand-in distributor: DCs, customers, ship-tos, items, cross-references,
price contracts, carriers, EDI partners and the restricted-party list.

The world is built once per run, before any order exists, but a few tables are finished
only after every day's orders are known, because their whole point is to be consistent with
the orders: credit accounts (clean customers must have headroom for all their orders, "near
limit" customers must not have headroom for any), inventory (enough stock for all clean
demand, none for the items that are meant to be short) and lazily created cross-references
and contracts (a defect line may need a part number or an overlapping contract that does not
exist yet). Everything is drawn from one seeded generator in a fixed order, so the same seed
always yields the same bytes.

Items are split into disjoint *pools* so that clean orders can never touch defective master
data by accident: ``clean`` (orderable, well stocked), ``sub_short`` (out of stock, has a
substitute), ``short`` (out of stock, no substitute), ``bad`` (master-data defects),
``east_only`` / ``west_only`` (stocked in one DC only; used in pairs to force a split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np

DISTRIBUTOR_ISA_ID = "DISTRIBUTORUS"
DISTRIBUTOR_GS_ID = "DISTRIBUTORUS"
DISTRIBUTOR_NAME = "Sandbox Industrial Distribution Inc"
ORDERS_MAILBOX = "orders@distributor.example"

TIERS = ("platinum", "gold", "silver", "standard")
TIER_SCALE_USD = {
    "platinum": 800_000.0,
    "gold": 200_000.0,
    "silver": 60_000.0,
    "standard": 20_000.0,
}
UOMS = ("EA", "CS", "BX", "PK", "FT", "LB")
TERMS = {
    "NET30": (0.0, 0, 30),
    "NET45": (0.0, 0, 45),
    "NET60": (0.0, 0, 60),
    "2/10NET30": (2.0, 10, 30),
    "NET15": (0.0, 0, 15),
}

# (city, state, 3-digit ZIP prefix, latitude, longitude)
CITIES: tuple[tuple[str, str, str, float, float], ...] = (
    ("New York", "NY", "100", 40.71, -74.00),
    ("Buffalo", "NY", "142", 42.89, -78.88),
    ("Newark", "NJ", "071", 40.73, -74.17),
    ("Philadelphia", "PA", "191", 39.95, -75.17),
    ("Pittsburgh", "PA", "152", 40.44, -80.00),
    ("Boston", "MA", "021", 42.36, -71.06),
    ("Hartford", "CT", "061", 41.76, -72.68),
    ("Baltimore", "MD", "212", 39.29, -76.61),
    ("Richmond", "VA", "232", 37.54, -77.44),
    ("Charlotte", "NC", "282", 35.23, -80.84),
    ("Raleigh", "NC", "276", 35.78, -78.64),
    ("Atlanta", "GA", "303", 33.75, -84.39),
    ("Orlando", "FL", "328", 28.54, -81.38),
    ("Miami", "FL", "331", 25.76, -80.19),
    ("Tampa", "FL", "336", 27.95, -82.46),
    ("Columbus", "OH", "432", 39.96, -83.00),
    ("Cleveland", "OH", "441", 41.50, -81.69),
    ("Detroit", "MI", "482", 42.33, -83.05),
    ("Chicago", "IL", "606", 41.88, -87.63),
    ("Indianapolis", "IN", "462", 39.77, -86.16),
    ("Nashville", "TN", "372", 36.16, -86.78),
    ("Columbia", "SC", "292", 34.00, -81.03),
    ("Louisville", "KY", "402", 38.25, -85.76),
    ("Milwaukee", "WI", "532", 43.04, -87.91),
    ("Minneapolis", "MN", "554", 44.98, -93.27),
    ("St. Louis", "MO", "631", 38.63, -90.20),
    ("Birmingham", "AL", "352", 33.52, -86.80),
    ("Manchester", "NH", "031", 42.99, -71.46),
    ("Wilmington", "DE", "198", 39.74, -75.55),
    ("New Orleans", "LA", "701", 29.95, -90.07),
    ("Memphis", "TN", "381", 35.15, -90.05),
    ("Kansas City", "MO", "641", 39.10, -94.58),
    ("Los Angeles", "CA", "900", 34.05, -118.24),
    ("San Diego", "CA", "921", 32.72, -117.16),
    ("San Jose", "CA", "951", 37.34, -121.89),
    ("Sacramento", "CA", "958", 38.58, -121.49),
    ("Fresno", "CA", "937", 36.74, -119.79),
    ("Seattle", "WA", "981", 47.61, -122.33),
    ("Spokane", "WA", "992", 47.66, -117.43),
    ("Portland", "OR", "972", 45.52, -122.68),
    ("Las Vegas", "NV", "891", 36.17, -115.14),
    ("Phoenix", "AZ", "850", 33.45, -112.07),
    ("Tucson", "AZ", "857", 32.22, -110.97),
    ("Salt Lake City", "UT", "841", 40.76, -111.89),
    ("Denver", "CO", "802", 39.74, -104.99),
    ("Dallas", "TX", "752", 32.78, -96.80),
    ("Houston", "TX", "770", 29.76, -95.37),
    ("Austin", "TX", "787", 30.27, -97.74),
    ("Albuquerque", "NM", "871", 35.08, -106.65),
    ("Boise", "ID", "837", 43.62, -116.20),
    ("Billings", "MT", "591", 45.78, -108.50),
    ("Oklahoma City", "OK", "731", 35.47, -97.52),
)

DCS: tuple[dict[str, Any], ...] = (
    {
        "dc_id": "DC-EAST",
        "name": "Carlisle Distribution Center",
        "region": "east",
        "timezone": "America/New_York",
        "postal_code": "17013",
        "lat": 40.20,
        "lon": -77.19,
    },
    {
        "dc_id": "DC-WEST",
        "name": "Ontario Distribution Center",
        "region": "west",
        "timezone": "America/Los_Angeles",
        "postal_code": "91761",
        "lat": 34.06,
        "lon": -117.65,
    },
)
ZONE_BANDS_KM = (250, 500, 800, 1100, 1500, 1900, 2400)

STREETS = (
    "Main St",
    "Industrial Pkwy",
    "Commerce Dr",
    "Enterprise Way",
    "Oak St",
    "Maple Ave",
    "Market St",
    "Park Ave",
    "Lake Rd",
    "Airport Blvd",
    "Distribution Dr",
    "Harbor Rd",
    "Railroad Ave",
    "Mill St",
    "Center St",
    "Technology Dr",
    "Corporate Blvd",
    "Washington St",
    "Jefferson Ave",
    "Lincoln Hwy",
    "Factory Ln",
    "Depot St",
    "Riverside Dr",
    "Pine St",
)
NAME_HEADS = (
    "Atlas",
    "Beacon",
    "Cedar",
    "Summit",
    "Harbor",
    "Keystone",
    "Pioneer",
    "Liberty",
    "Granite",
    "Northstar",
    "Riverbend",
    "Blue Ridge",
    "Lakeside",
    "Prairie",
    "Coastal",
    "Redwood",
    "Ironwood",
    "Silver Creek",
    "Eagle",
    "Falcon",
    "Heritage",
    "Frontier",
    "Metro",
    "Valley",
    "Pinnacle",
    "Crescent",
    "Union",
    "Sterling",
    "Patriot",
    "Midland",
    "Oakridge",
    "Bayview",
    "Highland",
    "Capitol",
    "Cornerstone",
    "Evergreen",
    "Trident",
    "Apex",
    "Legacy",
    "Great Lakes",
    "Tri-County",
    "Bluewater",
    "Copperline",
    "Westfield",
    "Brookside",
    "Stonegate",
    "Maple Leaf",
    "Horizon",
    "Canyon",
    "Delta",
)
NAME_TRADES = (
    "Mechanical",
    "Electric",
    "Plumbing",
    "HVAC",
    "Industrial",
    "Construction",
    "Facility Services",
    "Fabrication",
    "Maintenance",
    "Builders",
    "Contractors",
    "Manufacturing",
    "Health System",
    "School District",
    "Property Management",
    "Marine",
    "Automotive",
    "Welding",
    "Packaging",
    "Food Processing",
)
NAME_SUFFIXES = ("Inc", "LLC", "Co", "Corp", "Group", "Supply", "Partners", "Holdings")
BUYER_FIRST = (
    "Maria",
    "James",
    "Linda",
    "Robert",
    "Patricia",
    "Michael",
    "Jennifer",
    "David",
    "Susan",
    "Carlos",
    "Aisha",
    "Kevin",
    "Nancy",
    "Tom",
    "Priya",
    "Greg",
    "Dana",
)
BUYER_LAST = (
    "Garcia",
    "Smith",
    "Nguyen",
    "Johnson",
    "Brown",
    "Miller",
    "Davis",
    "Lopez",
    "Wilson",
    "Anderson",
    "Patel",
    "Kim",
    "Thompson",
    "Walsh",
    "Okafor",
    "Reyes",
)


@dataclass(frozen=True)
class Category:
    """What items of one product family look like (names, units, packs, weights, prices)."""

    code: str
    nouns: tuple[str, ...]
    specs: tuple[str, ...]
    finishes: tuple[str, ...]
    uoms: tuple[str, ...]
    packs: tuple[int, ...]
    weight_kg: tuple[float, float]
    price: tuple[float, float]
    p_hazmat: float


CATEGORIES: tuple[Category, ...] = (
    Category(
        "FST",
        (
            "HEX BOLT",
            "CARRIAGE BOLT",
            "LAG SCREW",
            "MACHINE SCREW",
            "HEX NUT",
            "FLAT WASHER",
            "LOCK WASHER",
            "WEDGE ANCHOR",
            "SELF-DRILL SCREW",
        ),
        (
            "1/4-20 X 1",
            "3/8-16 X 2",
            "1/2-13 X 3",
            "M8 X 25",
            "M10 X 40",
            "#10 X 3/4",
            "5/16-18 X 1-1/2",
        ),
        ("ZINC", "SS304", "SS316", "GR5", "GR8", "HDG", ""),
        ("BX", "PK"),
        (25, 50, 100, 250),
        (0.3, 6.0),
        (4.0, 90.0),
        0.0,
    ),
    Category(
        "SAF",
        (
            "NITRILE GLOVES",
            "SAFETY GLASSES",
            "EAR PLUGS",
            "HARD HAT",
            "HI-VIS VEST",
            "N95 RESPIRATOR",
            "FACE SHIELD",
        ),
        ("SIZE S", "SIZE M", "SIZE L", "SIZE XL", "ONE SIZE", "ANSI Z87", "NRR 32"),
        ("BLUE", "BLACK", "CLEAR", "ORANGE", "YELLOW", ""),
        ("BX", "CS", "EA", "PK"),
        (1, 10, 12, 100),
        (0.1, 4.0),
        (3.0, 120.0),
        0.0,
    ),
    Category(
        "ELE",
        (
            "THHN WIRE",
            "EMT CONDUIT",
            "WIRE CONNECTOR",
            "CIRCUIT BREAKER",
            "RECEPTACLE",
            "CABLE TIE",
            "LED LAMP",
        ),
        (
            "14 AWG",
            "12 AWG",
            "10 AWG",
            "1/2 IN",
            "3/4 IN",
            "20A 1P",
            "15A 120V",
            "8 IN 50LB",
            "A19 9W",
        ),
        ("BLACK", "WHITE", "RED", "GREEN", ""),
        ("FT", "EA", "PK", "BX"),
        (1, 10, 25, 100),
        (0.05, 3.0),
        (0.4, 180.0),
        0.0,
    ),
    Category(
        "PLB",
        (
            "COPPER PIPE",
            "PVC PIPE",
            "BALL VALVE",
            "ELBOW 90",
            "COUPLING",
            "PEX TUBING",
            "PIPE HANGER",
        ),
        ("1/2 IN", "3/4 IN", "1 IN", "1-1/2 IN", "2 IN", "TYPE L", "SCH 40"),
        ("COPPER", "PVC", "BRASS", "LEAD FREE", ""),
        ("FT", "EA", "BX"),
        (1, 10, 20, 50),
        (0.05, 5.0),
        (0.5, 150.0),
        0.0,
    ),
    Category(
        "CHM",
        (
            "DEGREASER",
            "LUBRICANT SPRAY",
            "THREADLOCKER",
            "ISOPROPYL ALCOHOL",
            "ACETONE",
            "PVC CEMENT",
            "BRAKE CLEANER",
        ),
        ("12 OZ", "16 OZ", "1 GAL", "5 GAL", "50 ML", "250 ML"),
        ("AEROSOL", "CONCENTRATE", "READY TO USE", ""),
        ("EA", "CS"),
        (1, 6, 12, 24),
        (0.3, 18.0),
        (5.0, 140.0),
        0.55,
    ),
    Category(
        "JAN",
        ("TRASH LINER", "PAPER TOWEL", "HAND SOAP", "FLOOR CLEANER", "MOP HEAD", "TOILET TISSUE"),
        ("33 GAL", "55 GAL", "1 GAL", "800 FT ROLL", "24 OZ", "2-PLY"),
        ("BLACK", "CLEAR", "WHITE", "LEMON", "UNSCENTED", ""),
        ("CS", "EA"),
        (1, 4, 6, 12, 96),
        (0.4, 14.0),
        (4.0, 95.0),
        0.05,
    ),
    Category(
        "ABR",
        ("SANDING DISC", "FLAP DISC", "CUT-OFF WHEEL", "WIRE BRUSH", "GRINDING WHEEL"),
        ("4-1/2 IN", "5 IN", "7 IN", "60 GRIT", "80 GRIT", "120 GRIT", "TYPE 27"),
        ("ZIRCONIA", "ALUMINUM OXIDE", "CERAMIC", ""),
        ("BX", "EA", "PK"),
        (1, 5, 10, 25, 50),
        (0.1, 4.0),
        (3.0, 85.0),
        0.0,
    ),
    Category(
        "MAT",
        ("STEEL ROD", "ALUMINUM SHEET", "MIG WELD WIRE", "SOLDER", "ANGLE IRON"),
        ("1/4 IN", "3/8 IN", "0.035 IN", "0.045 IN", "1/8 X 2 IN", "12 GA"),
        ("A36", "6061-T6", "ER70S-6", "60/40", ""),
        ("LB", "FT", "EA"),
        (1, 5, 10, 33),
        (0.2, 25.0),
        (2.0, 260.0),
        0.02,
    ),
    Category(
        "TLS",
        (
            "DRILL BIT",
            "HEX KEY SET",
            "TAPE MEASURE",
            "UTILITY KNIFE",
            "PLIERS",
            "SOCKET SET",
            "SCREWDRIVER",
        ),
        ("1/8 IN", "1/4 IN", "3/8 IN", "25 FT", "SAE 9PC", "METRIC 9PC", "8 IN"),
        ("HSS", "COBALT", "BLACK OXIDE", "CHROME", ""),
        ("EA", "PK"),
        (1, 2, 5, 10),
        (0.05, 6.0),
        (3.0, 320.0),
        0.0,
    ),
    Category(
        "PKG",
        ("STRETCH FILM", "SHIPPING CARTON", "PACKING TAPE", "BUBBLE WRAP", "POLY BAG"),
        ("18 IN X 1500 FT", "12 X 12 X 12", "2 IN X 110 YD", "24 IN X 250 FT", "9 X 12 IN"),
        ("80 GA", "32 ECT", "CLEAR", "2 MIL", ""),
        ("CS", "EA", "FT", "BX"),
        (1, 6, 25, 36, 500),
        (0.2, 15.0),
        (2.0, 110.0),
        0.0,
    ),
)

CARRIERS: tuple[tuple[str, str, str, int, float, bool, float, float], ...] = (
    ("UPS", "GND", "parcel", 4, 68.0, True, 9.5, 0.85),
    ("UPS", "2DA", "parcel", 2, 68.0, False, 19.0, 1.9),
    ("UPS", "NDA", "parcel", 1, 68.0, False, 34.0, 3.4),
    ("FEDEX", "GND", "parcel", 4, 68.0, True, 9.2, 0.88),
    ("FEDEX", "2DA", "parcel", 2, 68.0, False, 18.5, 2.0),
    ("FEDEX", "NDA", "parcel", 1, 68.0, False, 33.0, 3.5),
    ("USPS", "PRI", "parcel", 3, 31.0, False, 8.7, 1.1),
    ("ODFL", "LTL-STD", "ltl", 3, 9000.0, True, 145.0, 0.21),
    ("XPO", "LTL-STD", "ltl", 4, 9000.0, True, 132.0, 0.23),
    ("ESTES", "LTL-STD", "ltl", 4, 9000.0, True, 128.0, 0.24),
    ("SAIA", "LTL-GTD", "ltl", 2, 9000.0, False, 210.0, 0.30),
)

# (element sep, segment terminator, component sep, line ending, wrap80, weight)
DELIMITER_PROFILES: tuple[tuple[str, str, str, str, bool, float], ...] = (
    ("*", "~", ">", "\n", False, 0.34),
    ("*", "~", ">", "", False, 0.14),
    ("*", "~", ":", "\r\n", False, 0.14),
    ("|", "\n", ">", "", False, 0.08),
    ("^", "'", ":", "\n", False, 0.07),
    ("*", "~", "\\", "\r\n", True, 0.08),
    ("*", "~", ">", "\n", True, 0.08),
    ("*", "~", ":", "", False, 0.07),
)
ISA_VERSIONS = (("00401", 0.58), ("00501", 0.22), ("00300", 0.12), ("00200", 0.08))
GS_VERSIONS = {
    "00401": ("004010",),
    "00501": ("005010",),
    "00300": ("003040", "003050", "003060"),
    "00200": ("002003", "002040"),
}
# How a partner identifies items on PO1: primary qualifier and extra qualifiers sent with it.
EDI_ID_STYLES = (
    ("BP", ("VP",)),
    ("BP", ("VP", "UP")),
    ("BP", ()),
    ("IN", ("VP",)),
    ("BP", ("UP",)),
    ("BP", ("SK",)),
)
EDI_ID_STYLES_NO_CPN = (("VP", ("UP",)), ("UP", ()), ("VN", ("EN",)), ("SK", ("VP",)), ("VP", ()))

RESTRICTED_HEADS = (
    "Zagros",
    "Karakum",
    "Volgodonsk",
    "Amudarya",
    "Tabriz",
    "Kaspian",
    "Orenburg",
    "Sinuiju",
    "Latakia",
    "Hodeidah",
    "Khabarovsk",
    "Aleppo",
    "Bandar",
    "Herat",
    "Sevastopol",
    "Dzerzhinsk",
    "Kerman",
    "Wonsan",
)
RESTRICTED_TRADES = (
    "Trading",
    "Logistics",
    "Maritime",
    "Petrochem",
    "Shipping",
    "Metals",
    "Technologies",
    "Aviation",
    "Machinery",
    "Import Export",
)
RESTRICTED_SUFFIXES = ("FZE", "JSC", "OOO", "Establishment", "Company Limited", "PJSC")
RESTRICTED_COUNTRIES = ("IR", "RU", "KP", "SY", "BY", "CU", "AE", "VE", "MM")


@dataclass
class World:
    """Master data plus the internal indices the day generator needs.

    The JSON rows live in plain dicts (they are what ``world.json`` serialises); numpy arrays
    and per-customer lists are side indices keyed by row position.
    """

    seed: int
    business_dates: list[date]
    dcs: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    cust_weight: np.ndarray
    cust_region: list[str]
    cust_domain: list[str]
    cust_buyer: list[tuple[str, str]]
    cust_partner: list[int | None]
    cust_uses_cpn: np.ndarray
    cust_channel_p: np.ndarray  # (n_customers, 4) over edi, portal, email, csv
    cust_rep: list[str]
    ship_tos: list[dict[str, Any]]
    cust_ship_tos: list[list[int]]
    cust_bad_ship_tos: list[list[int]]
    items: list[dict[str, Any]]
    item_category: list[str]
    pools: dict[str, np.ndarray]
    catalogs: list[np.ndarray]
    catalog_p: list[np.ndarray]
    expired_items: list[list[int]]
    cpn_style: list[int]
    xrefs: dict[tuple[int, int], str]
    cpn_taken: list[set[str]]
    extra_xrefs: list[dict[str, Any]]
    contracts: list[dict[str, Any]]
    active_contract: dict[tuple[int, int], dict[str, Any]]
    expired_contract: dict[tuple[int, int], dict[str, Any]]
    overlap_contracts: dict[tuple[int, int], list[dict[str, Any]]]
    contracted_pairs: set[tuple[int, int]]
    carriers: list[dict[str, Any]]
    partners: list[dict[str, Any]]
    partner_id_style: list[tuple[str, tuple[str, ...]]]
    partner_interval_min: list[int]
    restricted_parties: list[dict[str, Any]]
    master_data_defects: list[dict[str, Any]]
    credit_accounts: list[dict[str, Any]] = field(default_factory=list)
    inventory: list[dict[str, Any]] = field(default_factory=list)
    next_contract_no: int = 1

    @property
    def first_date(self) -> date:
        return self.business_dates[0]

    @property
    def last_date(self) -> date:
        return self.business_dates[-1]

    def dc_for_ship_to(self, ship_to: int) -> str:
        """The DC nearest to a ship-to (by its region), i.e. where its stock is expected."""
        return "DC-EAST" if self.ship_tos[ship_to]["_region"] == "east" else "DC-WEST"

    def cpn_for(self, rng: np.random.Generator, cust: int, item: int) -> str | None:
        """The customer's part number for an item, created on first use for customers that
        keep their own part numbers (so every line a clean order shows resolves)."""
        if not self.cust_uses_cpn[cust]:
            return None
        key = (cust, item)
        cpn = self.xrefs.get(key)
        if cpn is None:
            cpn = self.new_cpn(rng, cust)
            self.xrefs[key] = cpn
        return cpn

    def new_cpn(self, rng: np.random.Generator, cust: int) -> str:
        """A fresh part number in the customer's own style, unique within the customer."""
        taken = self.cpn_taken[cust]
        while True:
            cpn = _cpn(rng, self.cpn_style[cust], cust)
            if cpn not in taken:
                taken.add(cpn)
                return cpn

    def add_contract(
        self,
        rng: np.random.Generator,
        cust: int,
        item: int,
        price: float,
        effective_from: date,
        expires_on: date | None,
        tolerance_pct: float,
    ) -> dict[str, Any]:
        row = {
            "contract_id": f"K{self.next_contract_no:07d}",
            "customer_id": self.customers[cust]["customer_id"],
            "item_id": self.items[item]["item_id"],
            "unit_price": round(price, 2),
            "currency": "USD",
            "uom": self.items[item]["uom"],
            "effective_from": effective_from.isoformat(),
            "expires_on": expires_on.isoformat() if expires_on else None,
            "tolerance_pct": tolerance_pct,
            "updated_at": _stamp(rng, effective_from - timedelta(days=int(rng.integers(1, 20)))),
        }
        self.next_contract_no += 1
        self.contracts.append(row)
        self.contracted_pairs.add((cust, item))
        return row

    def to_json(self) -> dict[str, Any]:
        """The ``world.json`` object, exactly in the documented shape."""
        xref_rows = [
            {
                "customer_id": self.customers[c]["customer_id"],
                "customer_part_number": cpn,
                "item_id": self.items[i]["item_id"],
                "updated_at": _xref_stamp(self, c, i),
            }
            for (c, i), cpn in self.xrefs.items()
        ] + self.extra_xrefs
        xref_rows.sort(key=lambda r: (r["customer_id"], r["customer_part_number"], r["item_id"]))
        return {
            "seed": self.seed,
            "business_date": self.first_date.isoformat(),
            "days": len(self.business_dates),
            "dcs": self.dcs,
            "customers": [_public(c) for c in self.customers],
            "ship_tos": [_public(s) for s in self.ship_tos],
            "items": [_public(i) for i in self.items],
            "xrefs": xref_rows,
            "contracts": self.contracts,
            "credit_accounts": self.credit_accounts,
            "inventory": self.inventory,
            "carriers": self.carriers,
            "partners": self.partners,
            "restricted_parties": self.restricted_parties,
            "master_data_defects": self.master_data_defects,
        }


# ---------------------------------------------------------------------------- helpers


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """Drop generator-private keys (prefixed ``_``) before serialising."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _stamp(rng: np.random.Generator, day: date) -> str:
    """An ISO UTC timestamp on ``day`` at a random office-hours minute."""
    minute = int(rng.integers(12 * 60, 23 * 60))
    at = datetime.combine(day, time(0, 0), tzinfo=UTC) + timedelta(minutes=minute)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _xref_stamp(world: World, cust: int, item: int) -> str:
    """Xrefs get a stable pseudo-random date derived from their key, so lazily created ones
    need no extra draws from the shared generator (keeps other tables stable)."""
    days_back = 5 + (cust * 7919 + item * 104729) % 600
    day = world.first_date - timedelta(days=days_back)
    return f"{day.isoformat()}T{14 + (item % 8):02d}:{(cust * 13) % 60:02d}:00Z"


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12742.0 * math.asin(math.sqrt(a))


def _city_geo() -> list[tuple[str, int]]:
    """For each city: its nearest DC region and the parcel zone from that DC."""
    out = []
    for _, _, _, lat, lon in CITIES:
        dists = [_haversine_km(lat, lon, dc["lat"], dc["lon"]) for dc in DCS]
        k = int(np.argmin(dists))
        zone = 1 + sum(dists[k] >= band for band in ZONE_BANDS_KM)
        out.append((DCS[k]["region"], zone))
    return out


def _upc(rng: np.random.Generator, taken: set[str]) -> str:
    """A unique 12-digit UPC-A with a valid check digit."""
    while True:
        body = f"{int(rng.integers(0, 10**11)):011d}"
        odd = sum(int(d) for d in body[0::2])
        even = sum(int(d) for d in body[1::2])
        code = body + str((10 - (odd * 3 + even) % 10) % 10)
        if code not in taken:
            taken.add(code)
            return code


def _cpn(rng: np.random.Generator, style: int, cust: int) -> str:
    """Customer part numbers follow one of a few house styles (per customer)."""
    n = int(rng.integers(0, 10**6))
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    if style == 0:
        return f"{letters[cust % 23]}{letters[(cust // 23) % 23]}-{n:06d}"
    if style == 1:
        return f"{n * 37 % 10**9:09d}"
    if style == 2:
        return f"{letters[n % 23]}{n % 1000:03d}/{n // 1000:03d}"
    return f"MRO{n:06d}-{letters[(n // 7) % 23]}"


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like weights with a little multiplicative noise so ranks are not perfectly even."""
    w = 1.0 / np.arange(1, n + 1) ** s
    w *= rng.lognormal(0.0, 0.25, n)
    return w / w.sum()


# ---------------------------------------------------------------------------- build


def build_world(
    rng: np.random.Generator, seed: int, business_dates: list[date], n_customers: int, n_items: int
) -> World:
    """Draw all master data that does not depend on the orders."""
    first = business_dates[0]
    dcs = [
        {
            "dc_id": d["dc_id"],
            "name": d["name"],
            "region": d["region"],
            "zones": [f"Z{z}" for z in range(1, 9)],
            "cutoff_local_time": "16:00",
            "timezone": d["timezone"],
            "postal_code": d["postal_code"],
            "country": "US",
        }
        for d in DCS
    ]
    customers, weight, region, domain, buyer, tiers = _customers(rng, n_customers, first)
    ship_tos, cust_st, cust_bad_st, md_defects = _ship_tos(
        rng, customers, tiers, region, weight, first
    )
    items, category, pools = _items(rng, n_items, first, md_defects)
    partners, cust_partner, id_styles, intervals, partner_cpn = _partners(rng, customers, weight)
    uses_cpn = np.array(
        [partner_cpn[p] if p is not None else bool(rng.random() < 0.3) for p in cust_partner]
    )
    channel_p = _channel_preferences(rng, cust_partner, weight)
    world = World(
        seed=seed,
        business_dates=business_dates,
        dcs=dcs,
        customers=customers,
        cust_weight=weight,
        cust_region=region,
        cust_domain=domain,
        cust_buyer=buyer,
        cust_partner=cust_partner,
        cust_uses_cpn=uses_cpn,
        cust_channel_p=channel_p,
        cust_rep=[f"REP{(i * 7) % 6 + 1:02d}" for i in range(n_customers)],
        ship_tos=ship_tos,
        cust_ship_tos=cust_st,
        cust_bad_ship_tos=cust_bad_st,
        items=items,
        item_category=category,
        pools=pools,
        catalogs=[],
        catalog_p=[],
        expired_items=[],
        cpn_style=[int(rng.integers(0, 4)) for _ in range(n_customers)],
        xrefs={},
        cpn_taken=[set() for _ in range(n_customers)],
        extra_xrefs=[],
        contracts=[],
        active_contract={},
        expired_contract={},
        overlap_contracts={},
        contracted_pairs=set(),
        carriers=_carriers(rng, first),
        partners=partners,
        partner_id_style=id_styles,
        partner_interval_min=intervals,
        restricted_parties=[],
        master_data_defects=md_defects,
    )
    _catalogs_and_contracts(rng, world, tiers)
    _standalone_master_defects(rng, world)
    world.restricted_parties = _restricted_parties(rng, world)
    return world


Rows = list[dict[str, Any]]


def _customers(
    rng: np.random.Generator, n: int, first: date
) -> tuple[Rows, np.ndarray, list[str], list[str], list[tuple[str, str]], list[str]]:
    """Customers ranked by size: a Zipf-like order share, tiers by rank."""
    weight = _zipf_weights(n, 0.8, rng)
    order = np.argsort(-weight, kind="stable")
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    cut = np.array([0.02, 0.10, 0.35]) * n
    names: set[str] = set()
    domains: set[str] = set()
    geo = _city_geo()
    customers, regions, doms, buyers, tiers = [], [], [], [], []
    for i in range(n):
        tier = TIERS[int(np.searchsorted(cut, rank[i], side="right"))]
        while True:
            name = (
                f"{NAME_HEADS[rng.integers(len(NAME_HEADS))]} "
                f"{NAME_TRADES[rng.integers(len(NAME_TRADES))]} "
                f"{NAME_SUFFIXES[rng.integers(len(NAME_SUFFIXES))]}"
            )
            if name not in names:
                names.add(name)
                break
        slug = "".join(ch for ch in name.lower().rsplit(" ", 1)[0] if ch.isalnum())
        dom = slug
        k = 2
        while dom in domains:
            dom, k = f"{slug}{k}", k + 1
        domains.add(dom)
        city = int(rng.integers(len(CITIES)))
        terms = ("NET30", "NET45", "NET60", "2/10NET30", "NET15")[
            int(rng.choice(5, p=[0.55, 0.12, 0.1, 0.15, 0.08]))
        ]
        customers.append(
            {
                "customer_id": f"C{i + 1:05d}",
                "name": name,
                "tier": tier,
                "payment_terms": terms,
                "currency": "USD",
                "edi_partner_id": None,
                "email": f"buyer@{dom}.example",
                "active": True,
                "ship_complete": bool(rng.random() < 0.3),
                "accepts_substitutes": bool(rng.random() < 0.55),
                "updated_at": _stamp(rng, first - timedelta(days=int(rng.integers(3, 700)))),
                "_city": city,
            }
        )
        regions.append(geo[city][0])
        doms.append(f"{dom}.example")
        buyers.append(
            (
                f"{BUYER_FIRST[rng.integers(len(BUYER_FIRST))]} "
                f"{BUYER_LAST[rng.integers(len(BUYER_LAST))]}",
                f"{rng.integers(201, 989)}-555-{rng.integers(0, 10000):04d}",
            )
        )
        tiers.append(tier)
    return customers, weight, regions, doms, buyers, tiers


def _address(rng: np.random.Generator, city: int) -> dict[str, Any]:
    name, state, zip3, _, _ = CITIES[city]
    line2 = (
        "",
        "",
        "",
        f"Suite {rng.integers(100, 900)}",
        f"Bldg {rng.integers(1, 9)}",
        f"Dock {rng.integers(1, 30)}",
    )[int(rng.integers(6))]
    return {
        "address_line1": f"{rng.integers(10, 9900)} {STREETS[rng.integers(len(STREETS))]}",
        "address_line2": line2,
        "city": name,
        "region": state,
        "postal_code": f"{zip3}{rng.integers(0, 100):02d}",
        "country": "US",
    }


def _ship_tos(
    rng: np.random.Generator,
    customers: list[dict],
    tiers: list[str],
    regions: list[str],
    weight: np.ndarray,
    first: date,
) -> tuple[Rows, list[list[int]], list[list[int]], Rows]:
    """Ship-tos per customer (more for bigger ones, near home or nationwide), plus a labelled
    few incomplete ones that only defect orders will use."""
    geo = _city_geo()
    counts = {"platinum": (6, 25), "gold": (3, 10), "silver": (1, 4), "standard": (1, 2)}
    sites = ("Main Warehouse", "Plant", "Job Site", "Service Center", "Branch", "Receiving")
    rows: list[dict[str, Any]] = []
    by_cust: list[list[int]] = []
    bad_by_cust: list[list[int]] = []
    defects: list[dict[str, Any]] = []
    p_bad = np.sqrt(weight)
    p_bad = np.minimum(0.5, p_bad / p_bad.sum() * len(customers) * 0.06)
    for c, cust in enumerate(customers):
        lo, hi = counts[tiers[c]]
        n = int(rng.integers(lo, hi + 1))
        idx: list[int] = []
        for k in range(n):
            city = cust["_city"] if k == 0 or rng.random() < 0.5 else int(rng.integers(len(CITIES)))
            if regions[c] != geo[city][0] and tiers[c] in ("silver", "standard"):
                city = cust["_city"]
            idx.append(len(rows))
            rows.append(_ship_to_row(rng, cust, k + 1, city, sites, geo, first))
        bad: list[int] = []
        if rng.random() < p_bad[c]:
            row = _ship_to_row(rng, cust, n + 1, cust["_city"], sites, geo, first)
            kind = "missing_postal_code" if rng.random() < 0.5 else "missing_address"
            if kind == "missing_postal_code":
                row["postal_code"] = "" if rng.random() < 0.5 else None
                detail = "postal_code is empty"
            else:
                row["address_line1"] = "" if rng.random() < 0.5 else None
                row["address_line2"] = ""
                detail = "address_line1 is empty"
            bad.append(len(rows))
            rows.append(row)
            defects.append(
                {"entity": "ship_to", "id": row["ship_to_id"], "kind": kind, "detail": detail}
            )
        by_cust.append(idx)
        bad_by_cust.append(bad)
    return rows, by_cust, bad_by_cust, defects


def _ship_to_row(
    rng: np.random.Generator,
    cust: dict,
    k: int,
    city: int,
    sites: tuple[str, ...],
    geo: list[tuple[str, int]],
    first: date,
) -> dict[str, Any]:
    site = sites[int(rng.integers(len(sites)))]
    name = cust["name"] if k == 1 else f"{cust['name']} - {site} {CITIES[city][0]}"
    return {
        "ship_to_id": f"{cust['customer_id']}-ST{k:02d}",
        "customer_id": cust["customer_id"],
        "name": name,
        **_address(rng, city),
        "zone": f"Z{geo[city][1]}",
        "updated_at": _stamp(rng, first - timedelta(days=int(rng.integers(2, 500)))),
        "_region": geo[city][0],
        "_city": city,
    }


def _items(
    rng: np.random.Generator, n: int, first: date, defects: Rows
) -> tuple[Rows, list[str], dict[str, np.ndarray]]:
    """The catalogue, with physical attributes per category and disjoint usage pools."""
    cat_idx = rng.integers(0, len(CATEGORIES), n)
    upcs: set[str] = set()
    items: list[dict[str, Any]] = []
    categories: list[str] = []
    for i in range(n):
        cat = CATEGORIES[cat_idx[i]]
        (wlo, whi), (plo, phi) = cat.weight_kg, cat.price
        uom = cat.uoms[int(rng.integers(len(cat.uoms)))]
        pack = 1 if uom in ("FT", "LB", "EA") else int(cat.packs[int(rng.integers(len(cat.packs)))])
        weight = float(np.exp(rng.uniform(np.log(wlo), np.log(whi))))
        if uom == "FT":
            weight = round(weight * 0.08, 3)
        elif uom == "LB":
            weight = 0.454
        price = float(np.exp(rng.uniform(np.log(plo), np.log(phi))))
        if uom == "FT":
            price = price / 20 + 0.15
        words = (
            cat.nouns[int(rng.integers(len(cat.nouns)))],
            cat.specs[int(rng.integers(len(cat.specs)))],
            cat.finishes[int(rng.integers(len(cat.finishes)))],
        )
        desc = " ".join(w for w in words if w)
        if pack > 1:
            desc += f" {pack}/{uom}"
        dims = sorted((rng.uniform(2, 60) for _ in range(3)), reverse=True)
        items.append(
            {
                "item_id": f"IT{i + 1:06d}",
                "description": desc,
                "uom": uom,
                "pack_size": pack,
                "weight_kg": round(max(weight, 0.01), 3),
                "length_cm": round(float(dims[0]), 1),
                "width_cm": round(float(dims[1]), 1),
                "height_cm": round(float(dims[2]), 1),
                "hazmat": bool(rng.random() < cat.p_hazmat),
                "discontinued": False,
                "substitute_item_ids": [],
                "list_price": round(price, 2),
                "unit_cost": round(price * rng.uniform(0.55, 0.8), 2),
                "upc": _upc(rng, upcs),
                "vendor_part": f"{cat.code}-{rng.integers(100, 999)}-{i + 1:05d}",
                "updated_at": _stamp(rng, first - timedelta(days=int(rng.integers(2, 900)))),
            }
        )
        categories.append(cat.code)
    pools = _item_pools(rng, items, categories, first, defects)
    return items, categories, pools


def _item_pools(
    rng: np.random.Generator,
    items: list[dict],
    categories: list[str],
    first: date,
    defects: list[dict[str, Any]],
) -> dict[str, np.ndarray]:
    """Split item indices into disjoint pools and give the special ones their properties."""
    n = len(items)
    perm = rng.permutation(n)
    sizes = {
        "bad": max(4, n // 250),
        "sub_short": max(8, n * 15 // 1000),
        "short": max(6, n * 12 // 1000),
        "east_only": max(4, n // 100),
        "west_only": max(4, n // 100),
    }
    pools: dict[str, np.ndarray] = {}
    start = 0
    for name, size in sizes.items():
        pools[name] = np.sort(perm[start : start + size])
        start += size
    pools["clean"] = np.sort(perm[start:])
    clean_by_key: dict[tuple[str, str, int], list[int]] = {}
    for i in pools["clean"]:
        clean_by_key.setdefault((categories[i], items[i]["uom"], items[i]["pack_size"]), []).append(
            int(i)
        )
    for i in pools["sub_short"]:
        peers = clean_by_key.get((categories[i], items[i]["uom"], items[i]["pack_size"]))
        if not peers:  # small catalogues: any family with the same unit and pack will do
            peers = [
                j
                for (_, uom, pack), js in clean_by_key.items()
                if (uom, pack) == (items[i]["uom"], items[i]["pack_size"])
                for j in js
            ]
        if not peers:  # last resort: become a variant of some clean item (same unit and pack)
            peers = [int(pools["clean"][int(rng.integers(len(pools["clean"])))])]
            items[i]["uom"] = items[peers[0]]["uom"]
            items[i]["pack_size"] = items[peers[0]]["pack_size"]
        k = min(len(peers), 1 + int(rng.random() < 0.3))
        subs = rng.choice(len(peers), size=k, replace=False)
        items[i]["substitute_item_ids"] = [items[peers[j]]["item_id"] for j in subs]
        items[i]["discontinued"] = bool(rng.random() < 0.6)
    for i in pools["short"]:
        items[i]["discontinued"] = bool(rng.random() < 0.15)
    for i in pools["bad"]:
        row = items[i]
        if rng.random() < 0.55:
            row["weight_kg"] = 0.0 if rng.random() < 0.6 else -round(float(rng.uniform(0.1, 3)), 2)
            defects.append(
                {
                    "entity": "item",
                    "id": row["item_id"],
                    "kind": "nonpositive_weight",
                    "detail": f"weight_kg={row['weight_kg']}",
                }
            )
        else:
            bad_uom = ("EACH", "CSE", "", "BOXES")[int(rng.integers(4))]
            defects.append(
                {
                    "entity": "item",
                    "id": row["item_id"],
                    "kind": "invalid_uom",
                    "detail": f"uom={bad_uom!r} (was {row['uom']})",
                }
            )
            row["_true_uom"] = row["uom"]
            row["uom"] = bad_uom
    # a realistic sprinkle of substitutes on ordinary items (they are never needed)
    for i in pools["clean"][rng.random(len(pools["clean"])) < 0.15]:
        peers = clean_by_key[(categories[i], items[i]["uom"], items[i]["pack_size"])]
        if len(peers) > 1:
            j = peers[int(rng.integers(len(peers)))]
            if j != i:
                items[i]["substitute_item_ids"] = [items[j]["item_id"]]
    return pools


def _partners(
    rng: np.random.Generator, customers: Rows, weight: np.ndarray
) -> tuple[Rows, list[int | None], list[tuple[str, tuple[str, ...]]], list[int], list[bool]]:
    """EDI trading partners are the biggest customers, up to ~45% of order volume."""
    order = np.argsort(-weight, kind="stable")
    cum = np.cumsum(weight[order])
    n_edi = int(np.searchsorted(cum, 0.455)) + 1
    cust_partner: list[int | None] = [None] * len(customers)
    partners: list[dict[str, Any]] = []
    styles: list[tuple[str, tuple[str, ...]]] = []
    partner_cpn: list[bool] = []
    intervals: list[int] = []
    prof_p = np.array([p[-1] for p in DELIMITER_PROFILES])
    ver_p = np.array([v[1] for v in ISA_VERSIONS])
    for rank, c in enumerate(order[:n_edi]):
        cust = customers[c]
        el, seg, comp, eol, wrap, _ = DELIMITER_PROFILES[
            int(rng.choice(len(prof_p), p=prof_p / prof_p.sum()))
        ]
        version = ISA_VERSIONS[int(rng.choice(len(ver_p), p=ver_p / ver_p.sum()))][0]
        gsv = GS_VERSIONS[version]
        qual = ("ZZ", "01", "12")[int(rng.choice(3, p=[0.7, 0.2, 0.1]))]
        word = "".join(ch for ch in cust["name"].upper() if ch.isalpha())[:10]
        code = {
            "ZZ": f"{word}{rank:02d}",
            "01": f"{rng.integers(10**8, 10**9)}",
            "12": f"{rng.integers(201, 989)}555{rng.integers(0, 10000):04d}",
        }[qual]
        rep = None
        if version == "00501":
            rep = "^" if el != "^" else "{"
        partner_id = f"TP{rank + 1:04d}"
        partners.append(
            {
                "partner_id": partner_id,
                "customer_id": cust["customer_id"],
                "isa_qualifier": qual,
                "isa_id": code.ljust(15),
                "gs_id": code,
                "isa_version": version,
                "gs_version": gsv[int(rng.integers(len(gsv)))],
                "element_sep": el,
                "segment_term": seg,
                "component_sep": comp,
                "repetition_sep": rep,
                "line_ending": eol,
                "wrap80": wrap,
                "bom": bool(rng.random() < 0.06),
            }
        )
        cust["edi_partner_id"] = partner_id
        cust_partner[c] = len(partners) - 1
        keeps_cpn = bool(rng.random() < 0.85)  # most big buyers send their own part numbers
        table = EDI_ID_STYLES if keeps_cpn else EDI_ID_STYLES_NO_CPN
        styles.append(table[int(rng.integers(len(table)))])
        partner_cpn.append(keeps_cpn)
        intervals.append((15, 30, 60, 120, 240)[int(rng.choice(5, p=[0.15, 0.3, 0.3, 0.15, 0.1]))])
    return partners, cust_partner, styles, intervals, partner_cpn


def _channel_preferences(
    rng: np.random.Generator, cust_partner: list[int | None], weight: np.ndarray
) -> np.ndarray:
    """Per-customer channel probabilities (edi, portal, email, csv).

    EDI customers send ~97% over EDI. Everyone else has one primary among portal/email/csv,
    chosen so the volume-weighted mix lands near 30/15/10 of all orders.
    """
    n = len(cust_partner)
    p = np.zeros((n, 4))
    is_edi = np.array([x is not None for x in cust_partner])
    p[is_edi] = [0.97, 0.02, 0.01, 0.0]
    non_edi_share = 1.0 - 0.97 * weight[is_edi].sum()
    remaining = np.array(
        [0.30 - 0.02 * weight[is_edi].sum(), 0.15 - 0.01 * weight[is_edi].sum(), 0.10]
    )
    target = np.clip(remaining / non_edi_share, 0.01, None)
    target = target / target.sum()
    # primary gets 80%, the other two 10% each → solve primary shares from the target mix
    primary = np.clip((target - 0.1) / 0.7, 0.01, None)
    primary = primary / primary.sum()
    for c in np.flatnonzero(~is_edi):
        k = int(rng.choice(3, p=primary))
        row = np.full(3, 0.1)
        row[k] = 0.8
        p[c, 1:] = row
    return p


def _catalogs_and_contracts(rng: np.random.Generator, world: World, tiers: list[str]) -> None:
    """Each customer buys from its own catalogue (a popularity-weighted draw of clean items);
    most catalogue pairs of bigger customers carry a contract price, some only an expired one."""
    clean = world.pools["clean"]
    pop = _zipf_weights(len(clean), 0.7, rng)
    pop = pop[rng.permutation(len(clean))]
    sizes = {"platinum": (150, 350), "gold": (60, 160), "silver": (20, 70), "standard": (6, 30)}
    coverage = {"platinum": 0.95, "gold": 0.85, "silver": 0.6, "standard": 0.3}
    first, last = world.first_date, world.last_date
    for c, tier in enumerate(tiers):
        lo, hi = sizes[tier]
        k = min(len(clean), int(rng.integers(lo, hi + 1)))
        chosen = clean[rng.choice(len(clean), size=k, replace=False, p=pop)]
        tol = float((0.5, 1.0, 2.0, 3.0)[int(rng.choice(4, p=[0.3, 0.4, 0.2, 0.1]))])
        has_contract = rng.random(k) < coverage[tier]
        expired_mask = has_contract & (rng.random(k) < 0.04)
        orderable: list[int] = []
        expired: list[int] = []
        for item, contracted, is_expired in zip(
            chosen.tolist(), has_contract, expired_mask, strict=True
        ):
            if world.cust_uses_cpn[c]:
                world.cpn_for(rng, c, item)
            if not contracted:
                orderable.append(item)
                continue
            price = world.items[item]["list_price"] * float(rng.uniform(0.72, 0.95))
            if is_expired:
                ends = first - timedelta(days=int(rng.integers(3, 150)))
                starts = ends - timedelta(days=int(rng.integers(180, 720)))
                world.expired_contract[(c, item)] = world.add_contract(
                    rng, c, item, price, starts, ends, tol
                )
                expired.append(item)
                continue
            starts = first - timedelta(days=int(rng.integers(20, 700)))
            if rng.random() < 0.1:  # an earlier, superseded price for the same pair
                old_start = starts - timedelta(days=int(rng.integers(180, 540)))
                world.add_contract(
                    rng,
                    c,
                    item,
                    price * float(rng.uniform(0.9, 1.05)),
                    old_start,
                    starts - timedelta(days=1),
                    tol,
                )
            ends = None if rng.random() < 0.4 else last + timedelta(days=int(rng.integers(45, 700)))
            world.active_contract[(c, item)] = world.add_contract(
                rng, c, item, price, starts, ends, tol
            )
            orderable.append(item)
        arr = np.array(orderable, dtype=int)
        w = _zipf_weights(len(arr), 1.0, rng) if len(arr) else np.zeros(0)
        world.catalogs.append(arr)
        world.catalog_p.append(w)
        world.expired_items.append(expired)


def _standalone_master_defects(rng: np.random.Generator, world: World) -> None:
    """Defects that no order touches but a master-data sweep should report."""
    n_items = len(world.items)
    n_cust = len(world.customers)
    clean = world.pools["clean"]
    first = world.first_date
    k = max(3, n_cust // 200)
    for _ in range(k):  # contract dates inverted / non-positive price on unused pairs
        c = int(rng.integers(n_cust))
        item = int(clean[rng.integers(len(clean))])
        if (c, item) in world.contracted_pairs or item in set(world.catalogs[c].tolist()):
            continue
        if rng.random() < 0.5:
            row = world.add_contract(
                rng,
                c,
                item,
                world.items[item]["list_price"] * 0.9,
                first + timedelta(days=30),
                first - timedelta(days=200),
                1.0,
            )
            kind, detail = "contract_dates_inverted", "expires_on is before effective_from"
        else:
            row = world.add_contract(rng, c, item, 0.0, first - timedelta(days=60), None, 1.0)
            row["unit_price"] = 0.0 if rng.random() < 0.6 else -1.0
            kind, detail = "nonpositive_price", f"unit_price={row['unit_price']}"
        world.master_data_defects.append(
            {"entity": "contract", "id": row["contract_id"], "kind": kind, "detail": detail}
        )
    cpn_customers = np.flatnonzero(world.cust_uses_cpn)
    for _ in range(k):  # orphan xref: points at an item that does not exist
        c = int(cpn_customers[rng.integers(len(cpn_customers))])
        cpn = world.new_cpn(rng, c)
        ghost = f"IT{n_items + 1 + int(rng.integers(0, 90000)):06d}"
        world.extra_xrefs.append(
            {
                "customer_id": world.customers[c]["customer_id"],
                "customer_part_number": cpn,
                "item_id": ghost,
                "updated_at": _stamp(rng, first - timedelta(days=40)),
            }
        )
        world.master_data_defects.append(
            {
                "entity": "xref",
                "id": f"{world.customers[c]['customer_id']}:{cpn}",
                "kind": "orphan_xref",
                "detail": f"item {ghost} does not exist",
            }
        )
    for _ in range(k):  # one customer part number mapped to two items
        c = int(cpn_customers[rng.integers(len(cpn_customers))])
        cpn = world.new_cpn(rng, c)
        a, b = (int(clean[j]) for j in rng.choice(len(clean), 2, replace=False))
        for item in (a, b):
            world.extra_xrefs.append(
                {
                    "customer_id": world.customers[c]["customer_id"],
                    "customer_part_number": cpn,
                    "item_id": world.items[item]["item_id"],
                    "updated_at": _stamp(rng, first - timedelta(days=25)),
                }
            )
        world.master_data_defects.append(
            {
                "entity": "xref",
                "id": f"{world.customers[c]['customer_id']}:{cpn}",
                "kind": "duplicate_customer_part_number",
                "detail": f"maps to {world.items[a]['item_id']} and {world.items[b]['item_id']}",
            }
        )


def _carriers(rng: np.random.Generator, first: date) -> list[dict[str, Any]]:
    return [
        {
            "carrier_id": cid,
            "service_code": svc,
            "mode": mode,
            "transit_days": days,
            "max_weight_kg": maxw,
            "hazmat_allowed": haz,
            "base_rate": base,
            "per_kg": per_kg,
            "updated_at": _stamp(rng, first - timedelta(days=int(rng.integers(5, 90)))),
        }
        for cid, svc, mode, days, maxw, haz, base, per_kg in CARRIERS
    ]


def _restricted_parties(rng: np.random.Generator, world: World) -> list[dict[str, Any]]:
    """A fictional screening list, all foreign: no real customer or ship-to may match it."""
    ours = set()
    for row in world.customers + world.ship_tos:
        ours |= {t for t in row["name"].casefold().replace(",", " ").split() if len(t) > 2}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    n = max(20, len(world.customers) // 10)
    while len(out) < n:
        name = (
            f"{RESTRICTED_HEADS[rng.integers(len(RESTRICTED_HEADS))]} "
            f"{RESTRICTED_TRADES[rng.integers(len(RESTRICTED_TRADES))]} "
            f"{RESTRICTED_SUFFIXES[rng.integers(len(RESTRICTED_SUFFIXES))]}"
        )
        toks = {t for t in name.casefold().split() if len(t) > 2}
        if name in seen or len(toks & ours) * 2 >= len(toks):
            continue
        seen.add(name)
        out.append(
            {
                "name": name,
                "country": RESTRICTED_COUNTRIES[int(rng.integers(len(RESTRICTED_COUNTRIES)))],
                "list": "SDN" if rng.random() < 0.6 else "ENTITY",
            }
        )
    return out


# ---------------------------------------------------------------------------- finish


def finish_credit(
    rng: np.random.Generator,
    world: World,
    totals: np.ndarray,
    min_amount: np.ndarray,
    hold: set[int],
    near_limit: set[int],
) -> None:
    """Credit accounts, sized against the orders that were actually generated.

    Clean customers get a limit covering open AR plus 1.5x all their orders of the run, so a
    correct orchestrator never refers them. Near-limit customers keep less headroom than
    their smallest order, so every one of their orders must be referred.
    """
    reasons = (
        "past due over 90 days",
        "returned payment (NSF)",
        "bankruptcy review",
        "disputed invoices pending",
    )
    rows = []
    first = world.first_date
    for c, cust in enumerate(world.customers):
        scale = TIER_SCALE_USD[cust["tier"]]
        if c in near_limit:
            limit = math.ceil(scale * float(rng.uniform(0.4, 1.0)) / 1000) * 1000.0
            headroom = round(float(min_amount[c]) * float(rng.uniform(0.05, 0.5)), 2)
            open_ar = round(limit - headroom, 2)
        else:
            open_ar = round(scale * float(rng.uniform(0.05, 0.6)), 2)
            limit = math.ceil((open_ar + 1.5 * float(totals[c]) + 2000.0) / 1000) * 1000.0
        on_hold = c in hold
        rows.append(
            {
                "customer_id": cust["customer_id"],
                "credit_limit": limit,
                "open_ar": open_ar,
                "on_hold": on_hold,
                "hold_reason": reasons[int(rng.integers(len(reasons)))] if on_hold else None,
                "updated_at": _stamp(rng, first - timedelta(days=int(rng.integers(1, 30)))),
            }
        )
    world.credit_accounts = rows


def finish_inventory(rng: np.random.Generator, world: World, demand: np.ndarray) -> None:
    """On-hand per item and DC from the run's total demand.

    ``demand[item]`` is everything any submission could ask for (held or not). Ordinary items
    get >=1.25x that at *each* DC so no sourcing policy can run a clean order short; the
    one-DC pools are stocked only at their DC; short pools get nothing.
    """
    n = len(world.items)
    stock = np.zeros((n, 2))
    base = rng.poisson(rng.choice([0, 5, 20, 60, 200], size=(n, 2), p=[0.1, 0.3, 0.3, 0.2, 0.1]))
    mult = rng.uniform(1.25, 1.9, size=(n, 2))
    stock = np.ceil(demand[:, None] * mult) + base
    stock[world.pools["sub_short"]] = 0
    stock[world.pools["short"]] = 0
    stock[world.pools["east_only"], 1] = 0
    stock[world.pools["west_only"], 0] = 0
    first = world.first_date
    stamp = [_stamp(rng, first - timedelta(days=1)) for _ in range(8)]
    world.inventory = [
        {
            "item_id": world.items[i]["item_id"],
            "dc_id": dc,
            "on_hand": float(stock[i, k]),
            "updated_at": stamp[(i + k) % 8],
        }
        for i in range(n)
        for k, dc in enumerate(("DC-EAST", "DC-WEST"))
    ]
