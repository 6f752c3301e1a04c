"""Print-ready files and mockups: what a seller gets for each product, checked pixel by pixel.

Designs are made here with Pillow (flat colours, halves of two colours, noise); every file is
read back with Pillow as a platform would read it.
"""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from core.errors import InvalidInput
from core.publishing.catalog import PrintArea, load_catalog
from core.publishing.mockups import make_mockup, make_mockups, print_box
from core.publishing.print_files import check_reachable, make_print_file, upscale_needed

TEE_FRONT = load_catalog(None).get("tshirt").print_areas["front"]
RED, BLUE = (220, 30, 40), (30, 60, 200)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def halves(width: int, height: int) -> Image.Image:
    """Red on the left half, blue on the right: shows orientation and where the design went."""
    image = Image.new("RGB", (width, height), RED)
    image.paste(BLUE, (width // 2, 0, width, height))
    return image


def noise(width: int, height: int, seed: int = 7) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def read(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


# --- print files ----------------------------------------------------------------------------


def test_tee_print_file_has_the_area_size_and_its_dpi_recorded() -> None:
    made = make_print_file(png(halves(4500, 4500)), TEE_FRONT)

    image = read(made.data)
    assert image.size == (4500, 5400) == (made.width, made.height)
    assert image.mode == "RGBA"
    assert tuple(round(d) for d in image.info["dpi"]) == (300, 300)
    assert made.dpi == made.effective_dpi == 300 and made.full
    # A square design on a 5:6 area: full width, centred vertically, transparent above and below.
    assert made.design_box == (0, 450, 4500, 4500)
    assert image.getpixel((2250, 200)) == (0, 0, 0, 0)
    assert image.getpixel((2250, 5200)) == (0, 0, 0, 0)
    assert image.getpixel((1000, 2700)) == (*RED, 255)
    assert image.getpixel((3500, 2700)) == (*BLUE, 255)


def test_design_is_fitted_inside_and_centred_keeping_its_aspect() -> None:
    area = PrintArea(width=600, height=400, dpi=300)
    made = make_print_file(png(halves(300, 300)), area)

    image = read(made.data)
    assert image.size == (600, 400)
    # Enlarged to the limiting side (height), centred across: margins left and right only.
    assert image.getchannel("A").getbbox() == (100, 0, 500, 400)
    assert made.design_box == (100, 0, 400, 400)
    assert image.getpixel((50, 200))[3] == 0 and image.getpixel((550, 200))[3] == 0
    assert image.getpixel((180, 200)) == (*RED, 255)
    assert image.getpixel((420, 200)) == (*BLUE, 255)
    assert image.getpixel((300, 5)) != (0, 0, 0, 0)  # nothing cropped at the top


def test_a_wide_design_gets_margins_above_and_below() -> None:
    area = PrintArea(width=500, height=500, dpi=150)
    made = make_print_file(png(halves(500, 250)), area)

    assert read(made.data).getchannel("A").getbbox() == (0, 125, 500, 375)


def test_a_design_already_at_its_fitted_size_is_not_resampled() -> None:
    design = noise(400, 400)
    made = make_print_file(png(design), PrintArea(width=400, height=500, dpi=300))

    image = read(made.data)
    assert made.design_box == (0, 50, 400, 400)
    assert image.crop((0, 50, 400, 450)).convert("RGB").tobytes() == design.tobytes()


def test_a_large_design_is_reduced_and_never_upscaled() -> None:
    area = PrintArea(width=400, height=500, dpi=300)
    assert upscale_needed(1000, 1000, area) < 1
    plan = check_reachable(1000, 1000, area)
    assert plan.scale == 1.0 and not plan.needed and plan.effective_dpi == 300

    made = make_print_file(png(halves(1000, 1000)), area)
    assert (made.width, made.height, made.effective_dpi) == (400, 500, 300)
    assert made.design_box == (0, 50, 400, 400)


def test_the_engine_is_asked_for_just_the_upscale_the_area_needs() -> None:
    plan = check_reachable(1024, 1024, TEE_FRONT)

    assert plan.scale == pytest.approx(4500 / 1024)  # not the largest (8)
    assert (plan.width, plan.height, plan.effective_dpi) == (4500, 4500, 300)


def test_a_design_too_small_even_after_the_largest_upscale_is_refused_naming_sizes_and_dpi() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_reachable(200, 300, TEE_FRONT, area_name="tshirt front")

    text = str(refused.value)
    assert refused.value.field == "design"
    for named in (
        "tshirt front",
        "200x300 px",
        "4500x5400 px at 300 DPI",
        "1600x2400 px",
        "133 DPI",
        "150 DPI",
    ):
        assert named in text


def test_the_side_limit_caps_the_upscale_of_a_long_design() -> None:
    # 1200 px long: 8192 / 1200 = 6.8, below the scale limit of 8.
    with pytest.raises(InvalidInput, match=r"x6\.83, at most 8192 px a side"):
        check_reachable(1200, 100, PrintArea(width=20000, height=2000, dpi=300))


def test_a_design_between_the_minimum_and_full_is_accepted_with_its_effective_dpi() -> None:
    plan = check_reachable(3000, 3000, TEE_FRONT, max_scale=1.0)
    assert plan.effective_dpi == 200 and plan.scale == 1.0

    made = make_print_file(png(halves(3000, 3000)), TEE_FRONT)
    assert made.effective_dpi == 200 and made.dpi == 300 and not made.full
    assert read(made.data).size == (4500, 5400)


def test_a_print_file_is_refused_below_the_minimum_dpi() -> None:
    with pytest.raises(InvalidInput, match=r"1000x1000 px gives 66 DPI on tshirt front .*at least 150 DPI"):
        make_print_file(png(halves(1000, 1000)), TEE_FRONT, area_name="tshirt front")


def test_a_transparent_design_keeps_its_transparency() -> None:
    design = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    design.paste((*RED, 255), (50, 50, 150, 150))
    made = make_print_file(png(design), PrintArea(width=200, height=200, dpi=300))

    image = read(made.data)
    assert image.getpixel((10, 10)) == (0, 0, 0, 0)
    assert image.getpixel((100, 100)) == (*RED, 255)


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not an image"):
        make_print_file(b"not a png", TEE_FRONT)


# --- mockups --------------------------------------------------------------------------------

CATALOG = load_catalog(None)
ORANGE = (230, 120, 30)


def flat(colour: tuple[int, int, int], width: int = 512, height: int = 512) -> bytes:
    return png(Image.new("RGB", (width, height), colour))


def hex_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def near(found: tuple[int, ...], expected: tuple[int, ...], within: int) -> bool:
    return all(abs(a - b) <= within for a, b in zip(found[:3], expected[:3], strict=True))


def jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image.convert("RGB")


@pytest.mark.parametrize("key", ["tshirt", "hoodie"])
def test_garment_mockups_one_per_colour_show_the_garment_and_the_design(key: str) -> None:
    product = CATALOG.get(key)
    mockups = make_mockups(flat(ORANGE), product, size=512)

    assert [name for name, _ in mockups] == list(product.colours)
    left, top, right, bottom = print_box(product, 512)
    for name, data in mockups:
        image = jpeg(data)
        assert image.size == (512, 512)
        garment = hex_rgb(product.colours[name])
        # The fabric below the print (the belly; a hoodie's pocket) is the colour asked for.
        assert near(image.getpixel((256, round(0.78 * 512))), garment, 14), name
        # The design is printed in the middle of the print box, its colour kept on every garment.
        assert near(image.getpixel(((left + right) // 2, (top + bottom) // 2)), ORANGE, 30), name
        # A square design in a taller print box leaves fabric above it.
        assert near(image.getpixel(((left + right) // 2, top + 3)), garment, 20), name


def test_the_print_box_has_the_print_areas_shape() -> None:
    left, top, right, bottom = print_box(CATALOG.get("tshirt"), 1000)
    assert (right - left) / (bottom - top) == pytest.approx(4500 / 5400, abs=0.01)


def test_a_poster_mockup_shows_the_design_on_its_paper_in_a_frame() -> None:
    product = CATALOG.get("poster")
    (name, data), *others = make_mockups(flat(ORANGE), product, size=512)

    assert name == "white" and others == []
    image = jpeg(data)
    left, top, right, bottom = print_box(product, 512)
    assert near(image.getpixel(((left + right) // 2, (top + bottom) // 2)), ORANGE, 20)
    assert near(image.getpixel(((left + right) // 2, top - 8)), (255, 255, 255), 14)  # the mat
    assert max(image.getpixel((left - 30, (top + bottom) // 2))) < 90  # the frame


def test_a_mug_mockup_shows_the_design_wrapped_on_its_body() -> None:
    product = CATALOG.get("mug")
    [(_, data)] = make_mockups(flat(ORANGE, 1024, 512), product, size=512)

    image = jpeg(data)
    left, top, right, bottom = print_box(product, 512)
    assert near(image.getpixel(((left + right) // 2, (top + bottom) // 2)), ORANGE, 30)
    # The white ceramic around it, and the light backdrop beyond the handle.
    assert min(image.getpixel(((left + right) // 2, round(0.78 * 512)))) > 200
    assert near(image.getpixel((500, 256)), (236, 235, 232), 10)


def test_mockups_are_the_same_bytes_every_time() -> None:
    design = png(noise(300, 300))
    for key in ("tshirt", "hoodie", "poster", "mug"):
        product = CATALOG.get(key)
        colour = next(iter(product.colours))
        first = make_mockup(design, product, colour, product.colours[colour], size=256)
        assert make_mockup(design, product, colour, product.colours[colour], size=256) == first


def test_a_transparent_design_shows_the_garment_through() -> None:
    design = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    design.paste((*ORANGE, 255), (150, 150, 250, 250))
    product = CATALOG.get("tshirt")
    image = jpeg(make_mockup(png(design), product, "navy", product.colours["navy"], size=512))

    left, top, right, bottom = print_box(product, 512)
    centre = ((left + right) // 2, (top + bottom) // 2)
    assert near(image.getpixel(centre), ORANGE, 30)
    assert near(image.getpixel((left + 8, centre[1])), hex_rgb(product.colours["navy"]), 14)


def test_a_colour_that_is_not_hex_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput, match="'sky': 'blue' is not a colour"):
        make_mockup(flat(ORANGE), CATALOG.get("tshirt"), "sky", "blue")
