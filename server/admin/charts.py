"""The dashboard's charts as SVG markup drawn on the server: no script, no CDN, no build step
(docs/dashboard.md#charts). Every chart has a text alternative and each bar a title."""

from __future__ import annotations

from typing import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 400, 170
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 50, 22, 10


def _nice_top(value: float) -> float:
    """A round number at or above `value` for the axis's top (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value:
        step /= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def daily_bars(label: str, days: Sequence[str], values: Sequence[float],
               shown: Callable[[float], str] = lambda v: f"{v:,.0f}") -> Markup:
    """Bars by day, scaled to the largest, with the axis's top and the first and last days named."""
    top = _nice_top(max(values, default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = plot_w / max(len(values), 1)
    bar_w = max(step * 0.8, 1.0)
    total = sum(values)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)} by day, {escape(days[0] if days else "")} to {escape(days[-1] if days else "")}: '
        f'{escape(shown(total))} in all">',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH - 4}" y2="{PAD_TOP + plot_h}"/>',
        f'<line class="grid" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{WIDTH - 4}" y2="{PAD_TOP}"/>',
        f'<text class="tick" x="{PAD_LEFT - 6}" y="{PAD_TOP + 4}" text-anchor="end">{escape(shown(top))}</text>',
        f'<text class="tick" x="{PAD_LEFT - 6}" y="{PAD_TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for n, (day, value) in enumerate(zip(days, values)):
        h = plot_h * value / top
        x = PAD_LEFT + n * step + (step - bar_w) / 2
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}"><title>{escape(day)}: {escape(shown(value))}</title></rect>')
    if days:
        y = HEIGHT - 4
        parts.append(f'<text class="tick" x="{PAD_LEFT}" y="{y}">{escape(days[0])}</text>')
        parts.append(f'<text class="tick" x="{WIDTH - 4}" y="{y}" text-anchor="end">{escape(days[-1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def interval_bar(estimate: float, low: float, high: float, scale: float) -> Markup:
    """A relative uplift's 95% interval as a bar around zero (GrowthBook's violin, flattened):
    green when it is all above zero, red when all below, grey across it; the dot is the
    estimate. `scale` is the largest |bound| drawn on the page, so rows compare."""
    w, h, mid = 200, 24, 100
    scale = scale or 1.0

    def x(v: float) -> float:
        return mid + max(-1.0, min(1.0, v / scale)) * (mid - 6)

    kind = "win" if low > 0 else "loss" if high < 0 else "unsure"
    label = f"uplift {estimate:+.1%}, 95% interval {low:+.1%} to {high:+.1%}"
    return Markup(
        f'<svg class="interval {kind}" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(label)}">'
        f'<line class="zero" x1="{mid}" y1="2" x2="{mid}" y2="{h - 2}"/>'
        f'<rect class="range" x="{x(low):.1f}" y="7" width="{max(x(high) - x(low), 1.5):.1f}" height="10" rx="3"/>'
        f'<circle class="estimate" cx="{x(estimate):.1f}" cy="12" r="4"/>'
        f"<title>{escape(label)}</title></svg>"
    )
