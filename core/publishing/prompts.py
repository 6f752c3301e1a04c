"""Design prompts composed from a theme, a style and a niche: deterministic templates.

The same inputs always give the same prompts, so a job can be made again; each template is
listed (`TEMPLATES`) so a client can show or pick them. An MCP client that supports sampling
can have its own model write the prompts instead (the MCP tool asks it); either way the prompt
used is recorded on the run.
"""

from __future__ import annotations

from core.errors import InvalidInput

# Each a print-friendly design brief: isolated subject, clean background, no text (garment
# printers and buyers both prefer it), in the requested style.
TEMPLATES: dict[str, str] = {
    "emblem": "{article_style} {theme} emblem design{for_niche}, centered, clean background, no text",
    "scene": "{article_style} {theme} scene{for_niche}, bold composition, print-ready, no text",
    "pattern": "{article_style} {theme} motif{for_niche}, balanced negative space, print-ready, no text",
    "badge": "a vintage-inspired {style_word}{theme} badge{for_niche}, crisp edges, no text",
    "minimal": "a minimalist {style_word}{theme} illustration{for_niche}, few colours, no text",
}
MAX_FIELD_CHARS = 200


def compose(
    theme: str, style: str = "", niche: str = "", count: int = 1, template: str | None = None
) -> list[str]:
    """`count` prompts for `theme` in `style` for `niche`: one template each, in order (or the
    named `template` for all of them)."""
    theme, style, niche = (
        _clean(name, value) for name, value in (("theme", theme), ("style", style), ("niche", niche))
    )
    if not theme:
        raise InvalidInput("theme", "is required to compose prompts (for example 'nature')")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 16:
        raise InvalidInput("count", f"must be an integer in 1..16 (got {count!r})")
    if template is not None and template not in TEMPLATES:
        raise InvalidInput("template", f"must be one of {', '.join(TEMPLATES)} (got {template!r:.40})")
    names = [template] * count if template else [list(TEMPLATES)[i % len(TEMPLATES)] for i in range(count)]
    words = {
        "theme": theme,
        "article_style": _article(style or theme) + (f" {style}" if style else ""),
        "style_word": f"{style} " if style else "",
        "for_niche": f" for {niche}" if niche else "",
    }
    prompts = []
    for name in names:
        text = TEMPLATES[name].format(**words)
        # "a nature nature scene" when there is no style: say the theme once.
        prompts.append(text.replace(f"{theme} {theme}", theme) if not style else text)
    return prompts


def _clean(field: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be text")
    value = " ".join(value.split())
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidInput(field, f"must be at most {MAX_FIELD_CHARS} characters (got {len(value)})")
    return value


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
