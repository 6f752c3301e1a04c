"""A catalog file whose product types (the built-in names) have small print areas: products are
made in milliseconds, with no upscale, where a test is about something other than print size."""

from __future__ import annotations

import json
from pathlib import Path

TINY_CATALOG = {
    "product_types": {
        key: {
            "name": key,
            "print_areas": {"front": {"width": 256, "height": 320, "dpi": 72}},
            "colours": {"white": "#ffffff", "black": "#000000"},
            "sizes": ["M"],
            "price_cents": 1000,
        }
        for key in ("tshirt", "hoodie", "poster", "mug")
    }
}


def tiny_catalog(folder: Path) -> Path:
    """The tiny catalog written to `folder/catalog.json` (for `ATELIER_CATALOG`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.json"
    path.write_text(json.dumps(TINY_CATALOG))
    return path
