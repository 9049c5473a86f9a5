"""A dependency-free SVG line plot of per-layer accuracy with confidence bands."""

from __future__ import annotations

from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def accuracy_svg(
    series: dict[str, list[tuple[int, float, float, float]]],
    title: str,
    width: int = 760,
    height: int = 420,
) -> str:
    """``series``: name → [(layer, accuracy, ci_low, ci_high)], accuracies in [0, 1]."""
    left, right, top, bottom = 56, 170, 40, 48
    layers = sorted({layer for points in series.values() for layer, *_ in points})
    lo, hi = min(layers), max(layers)
    span = max(hi - lo, 1)

    def x(layer: float) -> float:
        return left + (layer - lo) / span * (width - left - right)

    def y(value: float) -> float:
        return top + (1 - value) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{(left + width - right) / 2}" y="22" text-anchor="middle" font-size="14">'
        f"{escape(title)}</text>",
    ]
    for tick in range(0, 11, 2):
        value = tick / 10
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value)}" y2="{y(value)}" stroke="#e5e5e5"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4}" text-anchor="end">{value:.1f}</text>')
    for layer in layers:
        parts.append(f'<text x="{x(layer)}" y="{height - bottom + 16}" text-anchor="middle">{layer}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">'
        "encoder layer (hidden-state index)</text>"
    )
    parts.append(
        f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
        "accuracy (95% bootstrap CI)</text>"
    )
    for index, (name, points) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        points = sorted(points)
        band = [f"{x(layer)},{y(high)}" for layer, _, _, high in points]
        band += [f"{x(layer)},{y(low)}" for layer, _, low, _ in reversed(points)]
        parts.append(f'<polygon points="{" ".join(band)}" fill="{color}" fill-opacity="0.12"/>')
        line = " ".join(f"{x(layer)},{y(value)}" for layer, value, _, _ in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        for layer, value, _, _ in points:
            parts.append(f'<circle cx="{x(layer)}" cy="{y(value)}" r="2.5" fill="{color}"/>')
        legend_y = top + 8 + index * 18
        parts.append(
            f'<line x1="{width - right + 14}" x2="{width - right + 34}" y1="{legend_y}" y2="{legend_y}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - right + 40}" y="{legend_y + 4}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
