"""What the fake Shopify store (tests/fakes/shopify.py) accepts as variables: the shapes of
Shopify's Admin GraphQL input types that Atelier sends, checked as Shopify's schema checks them.

A variable of the wrong shape is a `GraphQLErrors` (Shopify answers HTTP 200 with top-level
`errors`, `extensions.problems` naming the path); a variant that contradicts the product's
options is a userError (`variants_problem`), as Shopify reports business errors.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

STATUSES = ("ACTIVE", "ARCHIVED", "DRAFT")
CONTENT_TYPES = ("IMAGE", "VIDEO", "MODEL_3D", "EXTERNAL_VIDEO", "FILE")
# fmt: off
PRODUCT_SET_FIELDS = {
    "title", "descriptionHtml", "status", "productType", "vendor", "tags", "productOptions",
    "variants", "files", "handle", "id", "seo", "metafields", "collections", "giftCard",
}
# fmt: on
VARIANT_FIELDS = {"optionValues", "price", "compareAtPrice", "sku", "barcode", "taxable", "inventoryPolicy"}


class GraphQLErrors(Exception):
    """Top-level `errors` (HTTP 200): the operation did not validate."""

    def __init__(self, message: str, path: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.path = message, path or []


def checked_options(options: Any) -> list[dict[str, Any]]:
    if not isinstance(options, list):
        raise GraphQLErrors("Expected value to be a list", ["input", "productOptions"])
    for index, option in enumerate(options):
        path = ["input", "productOptions", index]
        if not isinstance(option, dict) or not isinstance(option.get("name"), str):
            raise GraphQLErrors("Expected value to not be null for name", [*path, "name"])
        if set(option) - {"name", "position", "values", "id"}:
            raise GraphQLErrors(
                "Field is not defined on OptionSetInput",
                [*path, sorted(set(option) - {"name", "position", "values", "id"})[0]],
            )
        values = option.get("values")
        if not isinstance(values, list) or not all(
            isinstance(v, dict) and isinstance(v.get("name"), str) for v in values
        ):
            raise GraphQLErrors("Expected a list of OptionValueSetInput {name}", [*path, "values"])
    return options


def checked_variants(variants: Any) -> list[dict[str, Any]]:
    if not isinstance(variants, list):
        raise GraphQLErrors("Expected value to be a list", ["input", "variants"])
    for index, variant in enumerate(variants):
        path = ["input", "variants", index]
        if not isinstance(variant, dict):
            raise GraphQLErrors("Expected value to be an object", path)
        if set(variant) - VARIANT_FIELDS:
            raise GraphQLErrors(
                "Field is not defined on ProductVariantSetInput",
                [*path, sorted(set(variant) - VARIANT_FIELDS)[0]],
            )
        values = variant.get("optionValues")
        if not isinstance(values, list) or not all(
            isinstance(v, dict) and isinstance(v.get("optionName"), str) and isinstance(v.get("name"), str)
            for v in values
        ):
            raise GraphQLErrors(
                "Expected a list of VariantOptionValueInput {optionName, name}", [*path, "optionValues"]
            )
        try:
            if isinstance(variant.get("price"), bool) or Decimal(str(variant.get("price"))).is_nan():
                raise InvalidOperation
        except InvalidOperation:
            raise GraphQLErrors(
                f"invalid value for Money: {variant.get('price')!r}", [*path, "price"]
            ) from None
    return variants


def checked_files(files: Any) -> list[dict[str, Any]]:
    if not isinstance(files, list):
        raise GraphQLErrors("Expected value to be a list", ["input", "files"])
    for index, item in enumerate(files):
        path = ["input", "files", index]
        if not isinstance(item, dict) or not isinstance(item.get("originalSource"), str):
            raise GraphQLErrors("Expected value to not be null for originalSource", [*path, "originalSource"])
        if set(item) - {"originalSource", "contentType", "alt", "filename", "id", "duplicateResolutionMode"}:
            raise GraphQLErrors("Field is not defined on FileSetInput", path)
        if item.get("contentType") not in CONTENT_TYPES:
            raise GraphQLErrors(
                f"Expected {item.get('contentType')!r} to be one of: {', '.join(CONTENT_TYPES)}",
                [*path, "contentType"],
            )
    return files


def variants_problem(
    options: list[dict[str, Any]], variants: list[dict[str, Any]]
) -> tuple[list[Any], str] | None:
    """The userError Shopify gives a variant that does not match the product's options, if any."""
    if variants and not options:
        return ["input", "productOptions"], "Product options are required when variants are given"
    allowed = {o["name"]: {v["name"] for v in o["values"]} for o in options}
    seen: set[tuple[tuple[str, str], ...]] = set()
    for index, variant in enumerate(variants):
        path = ["input", "variants", index]
        chosen = {v["optionName"]: v["name"] for v in variant["optionValues"]}
        if set(chosen) != set(allowed):
            return [*path, "optionValues"], "Variant must have a value for every product option"
        for name, value in chosen.items():
            if value not in allowed[name]:
                return [*path, "optionValues"], f"Option value '{value}' does not exist on option '{name}'"
        if Decimal(str(variant["price"])) < 0:
            return [*path, "price"], "Price must be greater than or equal to 0"
        combination = tuple(sorted(chosen.items()))
        if combination in seen:
            return [*path, "optionValues"], "The variant already exists"
        seen.add(combination)
    return None
