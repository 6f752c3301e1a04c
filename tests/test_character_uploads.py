"""The training-image check: real files made by Pillow, each accepted or refused for its reason."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from core.characters.uploads import (
    CheckedImage,
    ImageRefused,
    UploadLimits,
    check_training_image,
    sniff_media_type,
)
from core.ids import FILENAME_RE, check_filename
from core.settings import Settings

LIMITS = UploadLimits(max_bytes=25_000_000, max_pixels=50_000_000, min_side=256)
SECRET = "GPS-48.8584N-2.2945E-secret"


def picture(size: tuple[int, int] = (640, 480), mode: str = "RGB") -> Image.Image:
    """A deterministic picture with detail everywhere (gradients), so no encoder makes it tiny."""
    width, height = size
    ramp = Image.linear_gradient("L").resize(size)
    ring = Image.radial_gradient("L").resize(size)
    diagonal = ramp.rotate(45, expand=False).resize(size)
    image = Image.merge("RGB", (ramp, ring, diagonal))
    image.paste((255, 0, 0), (0, 0, width // 8, height // 8))  # a red mark top-left
    return image.convert(mode) if mode != "RGB" else image


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def reopened(checked: CheckedImage) -> Image.Image:
    image = Image.open(io.BytesIO(checked.data))
    image.load()
    return image


def refusal(filename: str | None, data: bytes, limits: UploadLimits = LIMITS) -> str:
    with pytest.raises(ImageRefused) as refused:
        check_training_image(filename, data, limits)
    assert refused.value.filename
    return refused.value.reason


def bilevel_png(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of any size, written row by row: tiny file, huge decoded image."""
    deflate = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    body = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


# -- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "media_type", "extension"),
    [("PNG", "image/png", ".png"), ("JPEG", "image/jpeg", ".jpg"), ("WEBP", "image/webp", ".webp")],
)
def test_good_image_is_kept_with_its_real_type_size_and_a_safe_name(
    kind: str, media_type: str, extension: str
) -> None:
    checked = check_training_image(f"holiday photo.{kind}", encoded(picture(), kind), LIMITS)

    assert checked.filename == "holiday_photo" + extension
    assert check_filename(checked.filename)
    assert (checked.media_type, checked.width, checked.height) == (media_type, 640, 480)
    assert checked.sha256 == hashlib.sha256(checked.data).hexdigest()
    assert reopened(checked).format == kind
    assert reopened(checked).size == (640, 480)


def test_stored_extension_follows_the_bytes_not_the_name() -> None:
    checked = check_training_image("portrait.png", encoded(picture(), "JPEG"), LIMITS)

    assert (checked.filename, checked.media_type) == ("portrait.jpg", "image/jpeg")


def test_harmless_characters_in_names_are_replaced() -> None:
    data = encoded(picture(), "JPEG")

    assert check_training_image("Mära's photo (1).JPEG", data, LIMITS).filename == "Mara_s_photo_1_.jpg"
    assert check_training_image("-rf.final..v2.jpg", data, LIMITS).filename == "rf.final.v2.jpg"
    assert check_training_image("mara v1.2", data, LIMITS).filename == "mara_v1.2.jpg"


def test_missing_or_unusable_name_gets_one_made_from_the_content() -> None:
    data = encoded(picture(), "PNG")

    unnamed = check_training_image(None, data, LIMITS)
    chinese = check_training_image("猫.png", data, LIMITS)

    assert unnamed.filename == f"image-{unnamed.sha256[:12]}.png"
    assert chinese.filename == unnamed.filename
    assert FILENAME_RE.fullmatch(unnamed.filename)


def test_same_upload_twice_gives_the_same_bytes_and_sha256() -> None:
    for kind in ("PNG", "JPEG", "WEBP"):
        data = encoded(picture(), kind)
        first = check_training_image("a.png", data, LIMITS)
        second = check_training_image("b.png", data, LIMITS)
        assert first.data == second.data
        assert first.sha256 == second.sha256


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP"])
def test_image_with_exif_orientation_6_is_stored_upright_without_exif(kind: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encoded(picture((640, 480)), kind, exif=exif, quality=95)

    checked = check_training_image("sideways.jpg", data, LIMITS)
    stored = reopened(checked)

    assert (checked.width, checked.height) == (480, 640)
    assert stored.size == (480, 640)
    red, green, blue = stored.getpixel((479 - 20, 20))  # the red mark moved top-left -> top-right
    assert red > 200 and green < 60 and blue < 60
    assert not stored.getexif()
    assert b"Exif" not in checked.data
    assert stored.format == kind


def test_gps_exif_xmp_text_and_icc_are_stripped_from_every_type() -> None:
    exif = Image.Exif()
    exif[0x010F] = SECRET  # camera make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}  # GPS
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description note="{SECRET}"/></x:xmpmeta>'
    srgb = _srgb_profile()
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", SECRET)
    text.add_itxt("Description", SECRET)
    text.add_text("parameters", SECRET, zip=True)  # what some generators write
    sources = {
        "PNG": encoded(picture(), "PNG", pnginfo=text, exif=exif, icc_profile=srgb),
        "JPEG": encoded(picture(), "JPEG", exif=exif, xmp=xmp.encode(), icc_profile=srgb, comment=SECRET),
        "WEBP": encoded(picture(), "WEBP", exif=exif, xmp=xmp.encode(), icc_profile=srgb),
    }
    for kind, data in sources.items():
        assert SECRET.encode() in data or kind == "PNG"  # (PNG's zTXt is compressed)

        checked = check_training_image("x.png", data, LIMITS)
        stored = reopened(checked)

        assert SECRET.encode() not in checked.data, kind
        assert not stored.getexif(), kind
        metadata = {"exif", "xmp", "icc_profile", "comment", "Comment", "Description", "parameters"}
        assert not metadata & set(stored.info), (kind, stored.info.keys())


def test_cmyk_jpeg_is_stored_as_rgb() -> None:
    checked = check_training_image("print.jpg", encoded(picture(mode="CMYK"), "JPEG"), LIMITS)

    assert reopened(checked).mode == "RGB"


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"restart_marker_blocks": 4}, {"subsampling": 0}],
    ids=["baseline", "progressive", "restart-markers", "4:4:4"],
)
def test_upright_jpeg_is_stored_without_reencoding(options: dict[str, object]) -> None:
    exif = Image.Exif()
    exif[0x010F] = SECRET
    data = encoded(picture(), "JPEG", quality=85, exif=exif, comment=SECRET, **options)

    checked = check_training_image("photo.jpg", data, LIMITS)

    assert list(reopened(checked).getdata()) == list(Image.open(io.BytesIO(data)).getdata())
    assert len(checked.data) < len(data)  # the same coded picture, less metadata: not quality 95
    assert SECRET.encode() not in checked.data


def test_upright_png_keeps_its_compressed_pixels() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", SECRET)
    data = encoded(picture(), "PNG", compress_level=9, pnginfo=text)
    idat_at = data.index(b"IDAT")
    idat = data[idat_at : idat_at + 4 + struct.unpack(">I", data[idat_at - 4 : idat_at])[0]]

    checked = check_training_image("render.png", data, LIMITS)

    assert idat in checked.data
    assert SECRET.encode() not in checked.data


def test_sixteen_bit_rgb_png_is_stored_as_eight_bit() -> None:
    sixteen = _sixteen_bit_rgb_png(picture((300, 300)))

    checked = check_training_image("deep.png", sixteen, LIMITS)

    assert checked.data[24] == 8  # IHDR bit depth
    assert reopened(checked).size == (300, 300)


def test_colours_in_another_profile_are_converted_to_srgb() -> None:
    """A profile that swaps red and green: its red pixels are green to anyone who reads it."""
    swapped = _red_green_swapped_profile()
    for kind, options in (("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"lossless": True})):
        data = encoded(Image.new("RGB", (300, 300), (255, 0, 0)), kind, icc_profile=swapped, **options)

        stored = reopened(check_training_image("wide.png", data, LIMITS))

        red, green, blue = stored.getpixel((150, 150))
        assert red < 30 and green > 225 and blue < 30, (kind, stored.getpixel((150, 150)))
        assert "icc_profile" not in stored.info


def test_colour_conversion_keeps_alpha() -> None:
    image = Image.new("RGBA", (300, 300), (255, 0, 0, 255))
    image.paste((255, 0, 0, 0), (0, 0, 150, 300))
    data = encoded(image, "PNG", icc_profile=_red_green_swapped_profile())

    stored = reopened(check_training_image("cutout.png", data, LIMITS))

    assert stored.mode == "RGBA"
    assert stored.getpixel((10, 10))[3] == 0
    assert stored.getpixel((200, 10))[1] > 225 and stored.getpixel((200, 10))[3] == 255


def test_palette_png_with_transparency_keeps_its_alpha() -> None:
    image = picture().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    data = encoded(image, "PNG", transparency=0)

    stored = reopened(check_training_image("sticker.png", data, LIMITS))

    assert stored.convert("RGBA").getextrema()[3][0] == 0  # the transparent colour still is


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits_not_clipped() -> None:
    ramp = Image.linear_gradient("L").resize((512, 512)).convert("I").point(lambda v: v * 257)

    stored = reopened(check_training_image("scan.png", encoded(ramp.convert("I;16"), "PNG"), LIMITS))

    assert stored.mode == "L"
    assert stored.getextrema() == (0, 255)
    assert 100 < stored.getpixel((0, 256)) < 156  # mid-grey stays mid-grey


def test_lossless_webp_stays_lossless_and_lossy_stays_lossy() -> None:
    source = picture()
    lossless = check_training_image("a.webp", encoded(source, "WEBP", lossless=True), LIMITS)
    lossy = check_training_image("b.webp", encoded(source, "WEBP", quality=80), LIMITS)

    assert list(reopened(lossless).getdata()) == list(source.getdata())
    assert b"VP8L" in lossless.data[:40]
    assert b"VP8 " in lossy.data[:40]


def test_camera_multi_picture_jpeg_keeps_its_primary_picture() -> None:
    out = io.BytesIO()
    picture().save(out, "MPO", save_all=True, append_images=[picture((320, 240))])

    checked = check_training_image("camera.jpg", out.getvalue(), LIMITS)

    assert (checked.media_type, checked.width, checked.height) == ("image/jpeg", 640, 480)
    assert reopened(checked).format == "JPEG"  # the second picture and its index are gone
    assert checked.data.count(b"\xff\xd8\xff") == 1


# -- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x.png", "a/b.png", "C:\\x.png", "/etc/passwd", "..\\..\\x.png"])
def test_names_with_directories_are_refused(name: str) -> None:
    assert "may not contain directories" in refusal(name, encoded(picture(), "PNG"))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".hidden.png", "may not start with a dot"),
        ("..", "may not start with a dot"),
        ("a\x00b.png", "control characters"),
        ("a\nb.png", "control characters"),
        ("x.png:stream", "may not contain ':'"),
        ("x" * 129 + ".png", "over 128 characters"),
    ],
)
def test_dangerous_names_are_refused(name: str, reason: str) -> None:
    assert reason in refusal(name, encoded(picture(), "PNG"))


def test_empty_file_is_refused() -> None:
    assert refusal("empty.png", b"") == "the file is empty"


def test_file_over_the_byte_limit_is_refused_naming_the_limit() -> None:
    data = encoded(picture(), "PNG")
    reason = refusal("big.png", data, UploadLimits(max_bytes=10_000, max_pixels=50_000_000, min_side=256))

    assert f"is {len(data):,} bytes" in reason
    assert "the limit is 10,000 bytes" in reason


def test_renamed_text_file_is_refused_as_text() -> None:
    for text in (b"Dear diary,\nToday I renamed a text file.\n" * 20, b"BMW service notes\n" * 5):
        reason = refusal("notes.png", text)

        assert reason == "the file is text, not an image; upload PNG, JPEG or WebP"


def test_svg_is_refused_naming_svg() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"/>'

    assert refusal("logo.png", svg) == "SVG is not accepted: upload PNG, JPEG or WebP"


@pytest.mark.parametrize(
    ("kind", "named"), [("GIF", "a GIF image"), ("BMP", "a BMP image"), ("TIFF", "a TIFF image")]
)
def test_other_image_types_are_refused_by_name(kind: str, named: str) -> None:
    reason = refusal("photo.png", encoded(picture(), kind))

    assert reason == f"the file is {named}; upload PNG, JPEG or WebP"


def test_unknown_binary_is_refused() -> None:
    assert "not a PNG, JPEG or WebP" in refusal("blob.png", bytes(range(256)) * 8)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_refused(kind: str) -> None:
    data = encoded(picture((1024, 768)), kind)

    reason = refusal("cut.png", data[: len(data) * 2 // 3])

    assert reason.startswith("the image is truncated or corrupt")


def test_corrupt_png_data_is_refused() -> None:
    data = bytearray(encoded(picture(), "PNG"))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)

    assert refusal("bad.png", bytes(data)).startswith("the image is truncated or corrupt")


def test_too_small_image_is_refused_naming_its_size_and_the_minimum() -> None:
    reason = refusal("thumb.png", encoded(picture((1000, 100)), "PNG"))

    assert reason == "the image is 1000x100; training images need at least 256 pixels on each side"


def test_image_over_the_pixel_cap_is_refused_naming_both() -> None:
    limits = UploadLimits(max_bytes=25_000_000, max_pixels=1_000_000, min_side=256)

    reason = refusal("wide.png", bilevel_png(2000, 1000), limits)

    assert "2000x1000 (2,000,000 pixels)" in reason
    assert "the limit is 1,000,000 pixels" in reason


def test_animated_images_are_refused() -> None:
    frames = [picture(), picture().rotate(90)]
    for kind in ("PNG", "WEBP"):
        data = encoded(frames[0], kind, save_all=True, append_images=frames[1:], duration=100)
        assert refusal("wave.png", data) == "animated images are not accepted: upload a still image"


@pytest.mark.parametrize("side", [20_000, 8_000])
def test_huge_png_is_refused_without_decoding_it(side: int, tmp_path: Path) -> None:
    """20000x20000 trips Pillow's own bomb check at open; 8000x8000 (64 MP) trips ours."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bilevel_png(side, side))
    assert path.stat().st_size < 200_000
    # Peak memory is the process's: Pillow's pixel buffers are C allocations tracemalloc cannot see.
    child = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(child.stdout)

    assert f"{side * side:,} pixels" in result["reason"]
    assert "the limit is 50,000,000 pixels: scale it down and retry" in result["reason"]
    assert result["grown_bytes"] < 50_000_000  # decoding would take side * side bytes (64 MB to 400 MB)


_MEASURE = """
import json, resource, sys
from pathlib import Path
from core.characters.uploads import ImageRefused, UploadLimits, check_training_image
import PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin, PIL.WebPImagePlugin, PIL.ImageOps
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    check_training_image("bomb.png", data, UploadLimits(25_000_000, 50_000_000, 256))
    reason = "accepted"
except ImageRefused as refused:
    reason = refused.reason
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"reason": reason, "grown_bytes": (after - before) * 1024}))
"""


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt EXIF it skipped
def test_damaged_files_are_refused_or_stored_clean_never_anything_else() -> None:
    """Random damage to good files: each is refused for a reason, or stored decodable and clean."""
    exif = Image.Exif()
    exif[0x010F] = SECRET
    small = picture((300, 300))
    sources = [
        encoded(small, "PNG", exif=exif),
        encoded(small, "JPEG", exif=exif),
        encoded(small, "JPEG", exif=exif, progressive=True),
        encoded(small, "WEBP", exif=exif),
        encoded(small, "WEBP", exif=exif, lossless=True),
    ]
    chance = random.Random(5)
    outcomes = {"stored": 0, "refused": 0}
    for _ in range(500):
        damaged = bytearray(chance.choice(sources))
        for _ in range(chance.randint(1, 6)):
            at = chance.randrange(len(damaged))
            if chance.random() < 0.6:
                damaged[at] = chance.randrange(256)
            else:
                del damaged[at : at + chance.randint(1, 50)]
        try:
            checked = check_training_image("damaged.png", bytes(damaged), LIMITS)
        except ImageRefused:
            outcomes["refused"] += 1
            continue
        outcomes["stored"] += 1
        assert reopened(checked).size == (checked.width, checked.height)
        assert SECRET.encode() not in checked.data
    assert outcomes["stored"] and outcomes["refused"]


# -- around the check ---------------------------------------------------------------------------


def test_load_truncated_images_turned_on_elsewhere_stops_the_check() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = encoded(picture((1024, 768)), "PNG")
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
            check_training_image("cut.png", data[: len(data) // 2], LIMITS)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_sniff_media_type_reads_the_bytes() -> None:
    assert sniff_media_type(encoded(picture(), "PNG")) == "image/png"
    assert sniff_media_type(encoded(picture(), "JPEG")) == "image/jpeg"
    assert sniff_media_type(encoded(picture(), "WEBP")) == "image/webp"
    assert sniff_media_type(encoded(picture(), "GIF")) is None
    assert sniff_media_type(b"<svg/>") is None
    assert sniff_media_type(b"") is None


def test_limits_come_from_settings() -> None:
    settings = Settings(max_input_bytes=5_000_000, training_max_pixels=2_000_000, training_min_side=300)

    assert UploadLimits.from_settings(settings) == UploadLimits(5_000_000, 2_000_000, 300)


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _sixteen_bit_rgb_png(image: Image.Image) -> bytes:
    """`image` as a 16-bit-per-channel RGB PNG (Pillow writes only 8-bit RGB)."""
    width, height = image.size
    pixels = image.tobytes()
    rows = []
    for y in range(height):
        row = pixels[y * width * 3 : (y + 1) * width * 3]
        rows.append(b"\x00" + b"".join(bytes((v, v)) for v in row))
    body = zlib.compress(b"".join(rows))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _red_green_swapped_profile() -> bytes:
    """A minimal ICC v2 RGB display profile: sRGB's primaries with red and green swapped."""

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))

    name = b"Red-green swapped (test)"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(name) + 1) + name + b"\0" + bytes(8 + 3 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0233) + bytes(2)  # gamma 2.2
    red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*green)),
        (b"gXYZ", xyz(*red)),
        (b"bXYZ", xyz(*blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    illuminant = struct.pack(">iii", round(0.9642 * 65536), 65536, round(0.8249 * 65536))
    header = (
        struct.pack(">I", offset + len(body))
        + bytes(4)
        + b"\x02\x10\x00\x00mntrRGB XYZ "
        + bytes(12)  # date
        + b"acsp"
        + bytes(28)  # platform, flags, manufacturer, model, attributes, intent
        + illuminant
        + bytes(48)  # creator, id, reserved
    )
    return header + table + body
