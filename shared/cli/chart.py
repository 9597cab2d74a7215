"""A horizontal bar in unicode blocks, eighths of a character wide: a chart in a terminal table."""

from __future__ import annotations

BLOCKS = " ▏▎▍▌▋▊▉"  # 0..7 eighths
FULL = "█"


def bar(value: float, peak: float, width: int = 40) -> str:
    """``value`` as a bar of at most ``width`` characters, ``peak`` filling it; a value above zero shows."""
    if value <= 0 or peak <= 0:
        return ""
    eighths = max(1, round(min(value, peak) / peak * width * 8))
    full, part = divmod(eighths, 8)
    return FULL * full + (BLOCKS[part] if part else "")
