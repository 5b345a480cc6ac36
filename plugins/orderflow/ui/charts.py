"""Small server-side SVG charts (no JavaScript, no CDN: the page works offline and inside
Airflow's frame). Every mark carries ``data-label`` / ``data-value`` so a test or a screen
reader can read the numbers behind the picture."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

W, H, PAD = 560, 220, 36
COLOURS = ("#017cee", "#e8772e", "#2e9e44", "#b23c8f", "#8c6d1f", "#4b6a88")


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}".rstrip("0").rstrip(".")


def _link(mark: str, url: str | None) -> str:
    """A mark that leads somewhere (the orders behind it), or the mark alone."""
    return f'<a href="{escape(url)}" class="drill">{mark}</a>' if url else mark


def bars(
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    unit: str = "",
    href: Callable[[str], str | None] | None = None,
) -> str:
    """Horizontal bars: one per (label, value); ``href(label)`` links a bar."""
    items = list(items)
    top = max((v for _, v in items), default=0) or 1
    row = 22
    height = PAD + row * max(1, len(items))
    out = [
        f'<svg class="chart bars" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {height}" '
        f'width="100%" data-chart="{escape(title)}">',
        f'<text x="0" y="14" class="title">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = PAD - 8 + i * row
        width = (W - 230) * value / top
        out.append(
            _link(
                f'<g data-label="{escape(str(label))}" data-value="{value}">'
                f'<text x="0" y="{y + 13}" class="label">{escape(str(label))[:28]}</text>'
                f'<rect x="170" y="{y}" width="{width:.1f}" height="16" '
                f'fill="{COLOURS[i % len(COLOURS)]}"/>'
                f'<text x="{174 + width:.1f}" y="{y + 13}" class="value">'
                f"{_fmt(value)}{unit}</text></g>",
                href(str(label)) if href else None,
            )
        )
    out.append("</svg>")
    return "".join(out)


def lines(
    title: str,
    series: dict[str, Sequence[tuple[str, float]]],
    *,
    unit: str = "",
    href: Callable[[str, str], str | None] | None = None,
) -> str:
    """One polyline per series over shared x labels (e.g. days); ``href(series, x)`` links
    a point."""
    xs = sorted({x for pts in series.values() for x, _ in pts})
    values = [v for pts in series.values() for _, v in pts]
    lo, hi = min(values, default=0), max(values, default=1)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    step = (W - 2 * PAD) / max(1, len(xs) - 1)

    def xy(x: str, v: float) -> tuple[float, float]:
        return PAD + xs.index(x) * step, H - PAD - (H - 2 * PAD) * (v - lo) / (hi - lo)

    out = [
        f'<svg class="chart lines" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {H}" '
        f'width="100%" data-chart="{escape(title)}">',
        f'<text x="0" y="14" class="title">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" class="axis"/>',
        f'<text x="2" y="{PAD + 4}" class="label">{_fmt(hi)}{unit}</text>',
        f'<text x="2" y="{H - PAD}" class="label">{_fmt(lo)}{unit}</text>',
    ]
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = [xy(x, v) for x, v in sorted(pts)]
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
            + " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
            + '"/>'
        )
        for (x, v), (a, b) in zip(sorted(pts), coords, strict=True):
            out.append(
                _link(
                    f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{colour}" '
                    f'data-series="{escape(name)}" data-label="{escape(x)}" data-value="{v}">'
                    f"<title>{escape(name)} {escape(x)}: {_fmt(v)}{unit}</title></circle>",
                    href(name, x) if href else None,
                )
            )
        out.append(
            f'<text x="{W - PAD - 150}" y="{14 + 14 * i}" fill="{colour}" class="label">'
            f"{escape(name)}</text>"
        )
    if xs:
        out.append(f'<text x="{PAD}" y="{H - 8}" class="label">{escape(xs[0])}</text>')
        out.append(f'<text x="{W - PAD - 70}" y="{H - 8}" class="label">{escape(xs[-1])}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(
    title: str,
    buckets: Sequence[tuple[str, int]],
    *,
    href: Callable[[str], str | None] | None = None,
) -> str:
    """Vertical bars over ordered buckets (e.g. cycle-time ranges); ``href(label)`` links
    a bar."""
    buckets = list(buckets)
    top = max((n for _, n in buckets), default=0) or 1
    width = (W - 2 * PAD) / max(1, len(buckets))
    out = [
        f'<svg class="chart histogram" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {W} {H}" width="100%" data-chart="{escape(title)}">',
        f'<text x="0" y="14" class="title">{escape(title)}</text>',
    ]
    for i, (label, n) in enumerate(buckets):
        h = (H - 2 * PAD - 10) * n / top
        x = PAD + i * width
        out.append(
            _link(
                f'<g data-label="{escape(label)}" data-value="{n}">'
                f'<rect x="{x + 2:.1f}" y="{H - PAD - h:.1f}" width="{width - 4:.1f}" '
                f'height="{h:.1f}" fill="{COLOURS[0]}"/><text x="{x + 2:.1f}" '
                f'y="{H - PAD + 14}" class="label">{escape(label)}</text>'
                f'<text x="{x + 2:.1f}" y="{H - PAD - h - 3:.1f}" class="value">{n}</text></g>',
                href(label) if href else None,
            )
        )
    out.append("</svg>")
    return "".join(out)
