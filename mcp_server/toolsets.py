"""Toolsets: the groups of tools a user offers a model, chosen with `ATELIER_TOOLSETS`.

A host puts every listed tool in the model's context, so a user who only makes images need not
pay for the character and shop tools. `ATELIER_TOOLSETS=generate,runs` lists those two groups;
unset (or `all`) lists every one. The server's instructions then speak only of the tools listed.
Resources stay readable whatever is chosen: reading one costs no context until it is read.

This module names the toolsets and their instructions only (it imports no tool module), so
`atelier mcp` can check the setting and answer `initialize` before the tools are built.
"""

from __future__ import annotations

from core.errors import InvalidInput

SETTING = "ATELIER_TOOLSETS"

# Each toolset, in the order its tools are listed, with the paragraph of the server's
# instructions that speaks of them.
INSTRUCTIONS: dict[str, str] = {
    "generate": """\
generate_image (text-to-image), transform_image (image-to-image) and upscale_image queue a
run and wait up to `wait_seconds` for it; if it is not done by then you get the run id: call
wait_for_run with it (as often as needed). list_workflows and list_models tell which
workflows, checkpoints and LoRAs can be named. Finished runs come back as
small thumbnails plus links (atelier://runs/{run_id}/images/{filename}) to the full-size files.""",
    "runs": """\
wait_for_run, list_runs, get_run, cancel_run, retry_run, delete_run and bundle_run follow and
manage runs; get_status reports backend health and the queue.""",
    "characters": """\
Characters: create_character, then add_character_images (10-30 images), then train_character
(a training run; progress shows step and loss). generate_image and transform_image then take
`character` (its id or name) to draw it with its LoRA. list_characters and get_character show
them (atelier://characters/{id}).""",
    "products": """\
Print-on-demand: list_product_types (t-shirt, hoodie, poster, mug: print areas, colours,
prices, platforms), compose_prompts (design prompts from a theme, style and niche),
create_products (a design or prompts -> print files, mockups and DRAFT products),
list_products and get_product (atelier://products/{id}).""",
    "publishing": """\
publish_products puts draft products on sale (needs the user's confirmation: they are asked
when the client supports elicitation, otherwise pass confirm: true only after they agreed);
unpublish_product takes one off sale.""",
}
TOOLSETS = tuple(INSTRUCTIONS)
_HEAD = "Atelier makes images and keeps a durable record of every run."


def chosen(setting: str) -> tuple[str, ...]:
    """The toolsets `setting` (comma-separated names, blank or `all` for every one) names, in
    listing order. An unknown name is an `InvalidInput` for ATELIER_TOOLSETS naming the known ones."""
    names = [name.strip().lower() for name in setting.split(",") if name.strip()]
    if not names or names == ["all"]:
        return TOOLSETS
    unknown = [name for name in names if name not in INSTRUCTIONS]
    if unknown:
        raise InvalidInput(
            SETTING,
            f"unknown toolset {unknown[0]!r}: choose from {', '.join(TOOLSETS)} (comma-separated), or all",
        )
    return tuple(name for name in TOOLSETS if name in names)


def instructions(toolsets: tuple[str, ...]) -> str:
    """The server's instructions for a model that is offered `toolsets`."""
    return "\n".join([_HEAD, *(INSTRUCTIONS[name] for name in toolsets)]) + "\n"
