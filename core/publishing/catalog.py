"""The product catalog: what can be made from a design, and how each platform knows it.

A product type has print areas (pixel size and DPI), colours (name and hex, for mockups), sizes,
a default price, and per-platform mappings. Atelier ships defaults (`DEFAULT_CATALOG`); a JSON
file named by `ATELIER_CATALOG` replaces or adds types (same shape, merged by type key). Every
platform mapping says whether it is a `verified` fact or an assumption to check: the facts come
from ../shared/notes/external-apis.md (Printify blueprint 12 is the Bella+Canvas 3001 tee);
the rest are best guesses, and an adapter resolves what it can at runtime (Printify's variant
ids are looked up by colour and size from its catalog API, never hard-coded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidInput

TYPE_KEY = r"^[a-z][a-z0-9_-]{0,31}$"


class PrintArea(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(ge=100, le=20000, description="Pixels.")
    height: int = Field(ge=100, le=20000, description="Pixels.")
    dpi: int = Field(ge=72, le=1200)


class PlatformMapping(BaseModel):
    """How one platform knows this product type; `verified` says whether it is a checked fact."""

    model_config = ConfigDict(extra="allow", frozen=True)

    verified: bool = False
    note: str = ""


class ProductType(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=TYPE_KEY)
    name: str = Field(min_length=1, max_length=80)
    print_areas: dict[str, PrintArea] = Field(min_length=1)
    # Colour name -> "#rrggbb" (the mockups' garment or background colour).
    colours: dict[str, str] = Field(min_length=1)
    sizes: list[str] = Field(min_length=1)
    price_cents: int = Field(ge=1, le=10_000_000)
    platforms: dict[str, PlatformMapping] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


_TEE_COLOURS = {"white": "#f4f4f2", "black": "#1c1c1e", "heather grey": "#9c9ea3", "navy": "#22304a"}
_SIZES = ["S", "M", "L", "XL", "2XL"]

DEFAULT_CATALOG: dict[str, dict[str, Any]] = {
    "tshirt": {
        "name": "Unisex t-shirt",
        "print_areas": {"front": {"width": 4500, "height": 5400, "dpi": 300}},
        "colours": _TEE_COLOURS,
        "sizes": _SIZES,
        "price_cents": 2499,
        "platforms": {
            "printify": {
                "verified": True,
                "note": "blueprint 12 is the Bella+Canvas 3001 (confirmed); provider 99 Printify Choice is to verify",
                "blueprint_id": 12,
                "print_provider_id": 99,
            },
            "shopify": {
                "verified": False,
                "note": "product type and options are Atelier's choice",
                "product_type": "T-Shirt",
            },
        },
    },
    "hoodie": {
        "name": "Unisex hoodie",
        "print_areas": {"front": {"width": 4500, "height": 5400, "dpi": 300}},
        "colours": {"black": "#1c1c1e", "heather grey": "#9c9ea3", "navy": "#22304a", "white": "#f4f4f2"},
        "sizes": _SIZES,
        "price_cents": 4499,
        "platforms": {
            "printify": {
                "verified": False,
                "note": "blueprint 77 (Gildan 18500) and provider 99 are to verify",
                "blueprint_id": 77,
                "print_provider_id": 99,
            },
            "shopify": {
                "verified": False,
                "note": "product type and options are Atelier's choice",
                "product_type": "Hoodie",
            },
        },
    },
    "poster": {
        "name": "Poster 18x24 in",
        "print_areas": {"front": {"width": 5400, "height": 7200, "dpi": 300}},
        "colours": {"white": "#ffffff"},
        "sizes": ["18x24"],
        "price_cents": 1999,
        "platforms": {
            "printify": {
                "verified": False,
                "note": "blueprint and provider are assumptions",
                "blueprint_id": 282,
                "print_provider_id": 99,
            },
            "shopify": {"verified": False, "product_type": "Poster"},
        },
    },
    "mug": {
        "name": "Mug 11 oz",
        "print_areas": {"wrap": {"width": 2700, "height": 1100, "dpi": 300}},
        "colours": {"white": "#ffffff"},
        "sizes": ["11oz"],
        "price_cents": 1499,
        "platforms": {
            "printify": {
                "verified": False,
                "note": "blueprint and provider are assumptions",
                "blueprint_id": 68,
                "print_provider_id": 1,
                # Printify names a mug's print area "front"; Atelier's is the whole wrap.
                "positions": {"wrap": "front"},
            },
            "shopify": {"verified": False, "product_type": "Mug"},
        },
    },
}


@dataclass(slots=True)
class Catalog:
    types: dict[str, ProductType] = field(default_factory=dict)
    source: str = "built-in"

    def get(self, key: str) -> ProductType:
        """The product type `key`; `InvalidInput` naming the known ones otherwise."""
        found = self.types.get(key) if isinstance(key, str) else None
        if found is None:
            raise InvalidInput(
                "product_types", f"{key!r:.40} is not a product type (known: {', '.join(sorted(self.types))})"
            )
        return found

    def check(self, keys: object) -> list[ProductType]:
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list | tuple) or not keys:
            raise InvalidInput(
                "product_types", f"must be a list of product types ({', '.join(sorted(self.types))})"
            )
        return [self.get(key) for key in dict.fromkeys(keys)]


def load_catalog(path: Path | None) -> Catalog:
    """The shipped catalog, with the types of the JSON file at `path` replacing or adding to it.

    A file that cannot be read or does not fit the shape is `InvalidInput` naming the file and
    the first thing wrong in it (start-up refuses it: a seller must not publish from a catalog
    half understood).
    """
    raw: dict[str, Any] = {key: dict(value) for key, value in DEFAULT_CATALOG.items()}
    source = "built-in"
    if path is not None:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput("ATELIER_CATALOG", f"cannot read {path}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput("ATELIER_CATALOG", f"{path} is not valid JSON: {exc}") from None
        types = loaded.get("product_types") if isinstance(loaded, Mapping) else None
        if not isinstance(types, Mapping):
            raise InvalidInput(
                "ATELIER_CATALOG", f'{path} must be a JSON object {{"product_types": {{"<key>": {{...}}}}}}'
            )
        raw.update(
            {key: dict(value) if isinstance(value, Mapping) else value for key, value in types.items()}
        )
        source = f"built-in + {path}"
    catalog = Catalog(source=source)
    for key, value in raw.items():
        try:
            if not isinstance(value, Mapping):
                raise InvalidInput("ATELIER_CATALOG", f"product type {key!r} must be an object")
            catalog.types[key] = ProductType.model_validate({**value, "key": key})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInput(
                "ATELIER_CATALOG",
                f"product type {key!r}: {where}: {first['msg']} (in {path or 'the built-in catalog'})",
            ) from None
    return catalog
