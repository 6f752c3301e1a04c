"""What a product is: a design made print-ready for one product type, its mockups, and where
it is listed (one listing per platform)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

PRODUCT_ID_RE = re.compile(r"^prod-[0-9a-z]{12}$")
ProductStatus = Literal["draft", "published", "unpublished"]
ListingStatus = Literal["creating", "draft", "published", "unpublished", "failed"]


def new_product_id() -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "prod-" + "".join(secrets.choice(alphabet) for _ in range(12))


@dataclass(slots=True, frozen=True)
class ProductFile:
    """A print file (one per print area) or a mockup (one per colour): a file of the run that made it."""

    role: Literal["print", "mockup"]
    # The print area ("front", "back") of a print file; the colour of a mockup.
    name: str
    run_id: str
    filename: str
    width: int
    height: int
    dpi: int | None = None
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "run_id": self.run_id,
            "filename": self.filename,
            "width": self.width,
            "height": self.height,
            "dpi": self.dpi,
            "sha256": self.sha256,
        }


@dataclass(slots=True, frozen=True)
class Listing:
    """A product on one platform. Recorded as `creating` before the platform is called, and with
    its `external_id` the moment the platform returns one, so a retry never creates it twice."""

    platform: str
    status: ListingStatus
    external_id: str | None = None
    url: str | None = None
    error: str | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "status": self.status,
            "external_id": self.external_id,
            "url": self.url,
            "error": self.error,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class Product:
    id: str
    type: str
    title: str
    description: str
    price_cents: int
    # Where the design came from: {"run_id", "filename", "sha256", "prompt"?}.
    design: dict[str, Any]
    colours: list[str]
    sizes: list[str]
    files: list[ProductFile]
    status: ProductStatus
    run_id: str
    created_at: float
    updated_at: float
    listings: list[Listing] = field(default_factory=list)

    def listing(self, platform: str) -> Listing | None:
        return next((listing for listing in self.listings if listing.platform == platform), None)

    @property
    def print_files(self) -> list[ProductFile]:
        return [f for f in self.files if f.role == "print"]

    @property
    def mockups(self) -> list[ProductFile]:
        return [f for f in self.files if f.role == "mockup"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "price_cents": self.price_cents,
            "design": self.design,
            "colours": self.colours,
            "sizes": self.sizes,
            "files": [f.to_dict() for f in self.files],
            "status": self.status,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "listings": [listing.to_dict() for listing in self.listings],
        }
