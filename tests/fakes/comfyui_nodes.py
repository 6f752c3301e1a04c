"""ComfyUI 0.3.64 node types for the fake server: what /object_info reports and what each node does.

The specs follow ComfyUI's own definitions: nodes.py, comfy_extras/ (nodes_sd3, nodes_flux,
nodes_upscale_model, nodes_post_processing), the execution testing pack (TestSleep,
TestSyncError) and the websocket_image_save custom node. Nodes that ComfyUI has ported to its
V3 schema report the V3 shape, as the real server does: combos as ["COMBO", {"options": [...]}],
`display_name` null when the schema sets none, and the deprecated/experimental/api_node flags.

Pixel work (drawing, resizing, PNG encoding) runs in worker threads, as ComfyUI runs its nodes
off the server's event loop: HTTP and WebSocket traffic stay prompt while a large image is made.

The values flowing between nodes are small stand-ins: a MODEL is a file name plus the LoRAs
applied to it, a LATENT knows its pixel size and what each batch item decodes to, an IMAGE is a
list of RGB Pillow images. KSampler draws a picture derived from a hash of everything it was
given, so the same inputs give the same bytes and any change gives different ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import mimetypes
import posixpath
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, TypeVar

from anyio import to_thread
from PIL import Image, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

MAX_RESOLUTION = 16384

# comfy.samplers.KSampler.SAMPLERS and SCHEDULERS as /object_info/KSampler reported them.
SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]  # fmt: skip
SCHEDULERS = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
]  # fmt: skip
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_RESAMPLING = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# -- what nodes may ask of the server ---------------------------------------------------------


class FileAccess(Protocol):
    """The server's input/, output/ and temp/ folders ("kind"), each with subfolders."""

    def read_file(self, kind: str, subfolder: str, filename: str) -> bytes | None: ...

    def list_files(self, kind: str, subfolder: str = "") -> list[str]: ...

    def write_file(self, kind: str, subfolder: str, filename: str, data: bytes) -> None: ...


class NodeContext(FileAccess, Protocol):
    """What a running node sees: its ids, the hidden inputs, progress reporting and simulated GPU time."""

    prompt_id: str
    node_id: str
    prompt: dict[str, Any]
    extra_pnginfo: Any
    sampler_seconds: float

    def model_files(self, folder: str) -> list[str]:
        """The files a model folder (loras, checkpoints, ...) holds as the node runs."""
        ...

    async def progress(self, value: float, total: float, preview: Image.Image | None = None) -> None: ...

    async def work(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class Catalogue:
    """What combo inputs list: the installed model files by folder, and the files in input/."""

    models: Mapping[str, Sequence[str]]
    files: FileAccess

    def folder(self, name: str) -> list[str]:
        """The files installed in a model folder (checkpoints, loras, ...)."""
        return list(self.models.get(name, ()))

    def input_images(self) -> list[str]:
        """LoadImage's choices: image files directly in input/, sorted, like ComfyUI lists them."""
        return sorted(name for name in self.files.list_files("input") if _is_image_name(name))


# -- the values that flow between nodes -------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A diffusion model: the checkpoint or UNET file and the LoRAs applied along its chain."""

    name: str
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Clip:
    """A text encoder: its files, how it was loaded, and the LoRAs applied to it."""

    names: tuple[str, ...]
    kind: str
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Vae:
    """A VAE, known by its file."""

    name: str


@dataclass(frozen=True)
class Conditioning:
    """An encoded prompt."""

    text: str
    clip: Clip
    guidance: float | None = None


@dataclass(frozen=True)
class UpscaleModel:
    """An upscale model; its factor comes from its name (RealESRGAN_x4plus -> 4)."""

    name: str
    scale: int


@dataclass
class Latent:
    """A latent batch: its pixel size and what each item decodes to (None for an empty latent)."""

    width: int
    height: int
    images: list[Image.Image | None]


@dataclass
class NodeResult:
    """A node's outputs (one per output slot) and what it shows in the UI (history `outputs`)."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


InputTypes = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class NodeType:
    """One node class: its /object_info entry and the fake implementation behind it."""

    name: str
    inputs: Callable[[Catalogue], InputTypes]
    outputs: tuple[str, ...]
    run: Callable[..., Awaitable[NodeResult]]
    category: str
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    output_node: bool = False
    output_names: tuple[str, ...] | None = None
    output_tooltips: tuple[str, ...] | None = None
    v3: bool = False
    # VALIDATE_INPUTS(files, **inputs) -> True or a message, and the inputs it takes (those skip
    # ComfyUI's own min/max/combo checks).
    validate: Callable[..., bool | str] | None = None
    validate_inputs: tuple[str, ...] = ()
    # IS_CHANGED(files, **constant inputs): part of the cache key.
    fingerprint: Callable[..., object] | None = None
    is_async: bool = False

    @property
    def return_types(self) -> tuple[str, ...] | list[str]:
        """RETURN_TYPES: a tuple for V1 nodes, a list for V3 ones (a bad link's IndexError says which)."""
        return list(self.outputs) if self.v3 else tuple(self.outputs)

    def info(self, catalogue: Catalogue) -> dict[str, Any]:
        """The node's /object_info entry, keyed as ComfyUI's server.py node_info() keys it."""
        inputs = self.inputs(catalogue)
        order = {section: list(entries) for section, entries in inputs.items()}
        names = list(self.output_names or self.outputs)
        if self.v3:
            return {
                "input": inputs,
                "input_order": order,
                "output": list(self.outputs),
                "output_is_list": [False] * len(self.outputs),
                "output_name": names,
                "output_tooltips": [None] * len(self.outputs),
                "name": self.name,
                "display_name": self.display_name,
                "category": self.category,
                "description": self.description,
                "output_node": self.output_node,
                "deprecated": False,
                "experimental": False,
                "api_node": False,
                "python_module": self.python_module,
            }
        info: dict[str, Any] = {
            "input": inputs,
            "input_order": order,
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": names,
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips is not None:
            info["output_tooltips"] = list(self.output_tooltips)
        return info


def describe(value: Any) -> Any:
    """How an execution_error's `current_inputs` shows a value (ComfyUI prints tensors as text)."""
    if value is None or isinstance(value, int | float | bool | str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], Image.Image):
        width, height = value[0].size
        return f"tensor of shape [{len(value)}, {height}, {width}, 3]"
    if isinstance(value, Latent):
        return f"{{'samples': tensor of shape [{len(value.images)}, 4, {value.height // 8}, {value.width // 8}]}}"
    return repr(value)


# -- helpers ----------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    kind = mimetypes.guess_type(name, strict=False)[0]
    return kind is not None and kind.split("/")[0] == "image"


def annotated_path(name: str, default_kind: str = "input") -> tuple[str, str, str]:
    """(kind, subfolder, filename) of a name like "sub/x.png" or "x.png [output]"."""
    kind = default_kind
    for suffix in ("output", "input", "temp"):
        if name.endswith(f"[{suffix}]"):
            kind, name = suffix, name[: -(len(suffix) + 3)]
            break
    subfolder, filename = posixpath.split(name.replace("\\", "/"))
    return kind, subfolder, filename


def _read_annotated(files: FileAccess, name: str) -> bytes | None:
    kind, subfolder, filename = annotated_path(name)
    normalized = posixpath.normpath(subfolder) if subfolder else ""
    if normalized.startswith(("..", "/")) or not filename:
        return None
    return files.read_file(kind, subfolder, filename)


T = TypeVar("T")


async def _pixel_work(pixels: int, function: Callable[..., T], *args: Any) -> T:
    """Small images inline (a thread hop costs more than the work), large ones off the loop."""
    if pixels <= 128 * 128:
        return function(*args)
    return await to_thread.run_sync(function, *args)


def _png(image: Image.Image, compress_level: int, pnginfo: PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo, compress_level=compress_level)
    return buffer.getvalue()


def _render(material: Any, width: int, height: int) -> Image.Image:
    """A smooth picture whose every pixel depends on `material`: 16 colours from its hash, upscaled."""
    digest = hashlib.sha512(json.dumps(material, sort_keys=True, default=str).encode()).digest()
    return Image.frombytes("RGB", (4, 4), digest[:48]).resize((width, height), Image.Resampling.BICUBIC)


def _draw(material: Any, width: int, height: int, source: Image.Image | None, denoise: float) -> Image.Image:
    picture = _render(material, width, height)
    if source is not None:
        # img2img: the less denoise, the more of the source survives.
        picture = Image.blend(_resize(source, width, height), picture, max(0.0, min(1.0, denoise)))
    return picture


def _fingerprint_image(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest() + f"@{image.width}x{image.height}"


def _model_scale(name: str) -> int:
    """The factor in an upscale model's name: "x4" / "4x" -> 4; 4 when the name does not say."""
    match = re.search(r"(?:^|[^a-z0-9])x(\d+)|(\d+)x(?:[^a-z0-9]|$)", name.lower())
    if match is None:
        return 4
    return int(match.group(1) or match.group(2))


def _resize(image: Image.Image, width: int, height: int, method: str = "bicubic") -> Image.Image:
    return image.resize((max(1, width), max(1, height)), _RESAMPLING.get(method, Image.Resampling.BICUBIC))


def _with_lora(
    loras: tuple[tuple[str, float], ...], name: str, strength: float
) -> tuple[tuple[str, float], ...]:
    return (*loras, (name, strength))


def _save_path(files: FileAccess, kind: str, prefix: str, width: int, height: int) -> tuple[str, str, int]:
    """folder_paths.get_save_image_path: (subfolder, filename, next counter) for a filename_prefix."""
    if "%" in prefix:
        now = time.localtime()
        for token, value in (
            ("%width%", str(width)),
            ("%height%", str(height)),
            ("%year%", str(now.tm_year)),
            ("%month%", str(now.tm_mon).zfill(2)),
            ("%day%", str(now.tm_mday).zfill(2)),
            ("%hour%", str(now.tm_hour).zfill(2)),
            ("%minute%", str(now.tm_min).zfill(2)),
            ("%second%", str(now.tm_sec).zfill(2)),
        ):
            prefix = prefix.replace(token, value)
    normalized = posixpath.normpath(prefix.replace("\\", "/"))
    subfolder, filename = posixpath.dirname(normalized), posixpath.basename(normalized)
    if subfolder.startswith(("..", "/")):
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    prefix_len = len(filename)
    counters = [0]
    for existing in files.list_files(kind, subfolder):
        if existing[:prefix_len] == filename and existing[prefix_len : prefix_len + 1] == "_":
            try:
                counters.append(int(existing[prefix_len + 1 :].split("_")[0]))
            except ValueError:
                counters.append(0)
    return subfolder, filename, max(counters) + 1


async def _save_images(
    ctx: NodeContext, images: list[Image.Image], prefix: str, kind: str, compress_level: int
) -> NodeResult:
    width, height = images[0].size if images else (0, 0)
    subfolder, filename, counter = _save_path(ctx, kind, prefix, width, height)
    results = []
    for batch_number, image in enumerate(images):
        pnginfo = PngInfo()
        pnginfo.add_text("prompt", json.dumps(ctx.prompt))
        if isinstance(ctx.extra_pnginfo, dict):
            for key, value in ctx.extra_pnginfo.items():
                pnginfo.add_text(key, json.dumps(value))
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        data = await _pixel_work(image.width * image.height, _png, image, compress_level, pnginfo)
        ctx.write_file(kind, subfolder, name, data)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return NodeResult((), {"images": results})


# -- node implementations ---------------------------------------------------------------------


async def _checkpoint_loader(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    return NodeResult((Model(ckpt_name), Clip((ckpt_name,), "checkpoint"), Vae(ckpt_name)))


async def _clip_text_encode(ctx: NodeContext, text: str, clip: Clip) -> NodeResult:
    return NodeResult((Conditioning(text, clip),))


async def _empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> NodeResult:
    # A latent is 1/8 of the pixel size, so what it decodes to is rounded down to a multiple of 8.
    return NodeResult((Latent(width // 8 * 8, height // 8 * 8, [None] * batch_size),))


async def _ksampler(
    ctx: NodeContext,
    model: Model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    denoise: float = 1.0,
) -> NodeResult:
    step_seconds = ctx.sampler_seconds / steps
    for step in range(steps):
        await ctx.work(step_seconds)
        await ctx.progress(step + 1, steps)
    width, height = latent_image.width, latent_image.height
    images: list[Image.Image | None] = []
    for index, source in enumerate(latent_image.images):
        material = {
            "seed": seed,
            "batch_index": index,
            "model": asdict(model),
            "positive": asdict(positive),
            "negative": asdict(negative),
            "steps": steps,
            "cfg": cfg,
            "sampler": sampler_name,
            "scheduler": scheduler,
            "denoise": denoise,
            "source": None if source is None else _fingerprint_image(source),
        }
        images.append(await _pixel_work(width * height, _draw, material, width, height, source, denoise))
    return NodeResult((Latent(width, height, images),))


async def _vae_decode(ctx: NodeContext, samples: Latent, vae: Vae) -> NodeResult:
    gray = Image.new("RGB", (max(1, samples.width), max(1, samples.height)), (128, 128, 128))
    return NodeResult(([image if image is not None else gray.copy() for image in samples.images],))


async def _vae_encode(ctx: NodeContext, pixels: list[Image.Image], vae: Vae) -> NodeResult:
    cropped = []
    for image in pixels:
        # VAEEncode crops to a multiple of 8, centred, as vae_encode_crop_pixels does.
        width, height = image.width // 8 * 8, image.height // 8 * 8
        left, top = (image.width % 8) // 2, (image.height % 8) // 2
        cropped.append(image.crop((left, top, left + width, top + height)))
    width, height = (cropped[0].width, cropped[0].height) if cropped else (0, 0)
    return NodeResult((Latent(width, height, list(cropped)),))


async def _save_image(
    ctx: NodeContext, images: list[Image.Image], filename_prefix: str = "ComfyUI"
) -> NodeResult:
    return await _save_images(ctx, images, filename_prefix, "output", compress_level=4)


async def _preview_image(ctx: NodeContext, images: list[Image.Image]) -> NodeResult:
    # PreviewImage's prefix_append: "_temp_" and five letters from ComfyUI's (misspelt) alphabet.
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    return await _save_images(ctx, images, f"ComfyUI_temp_{suffix}", "temp", compress_level=1)


async def _load_image(ctx: NodeContext, image: str) -> NodeResult:
    data = _read_annotated(ctx, image)
    if data is None:
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{image}'")
    return NodeResult(await to_thread.run_sync(_decode, data))


def _decode(data: bytes) -> tuple[list[Image.Image], list[Image.Image]]:
    """LoadImage: the frames of one size as RGB, and masks from their alpha (inverted, as ComfyUI does)."""
    opened = Image.open(io.BytesIO(data))
    images: list[Image.Image] = []
    masks: list[Image.Image] = []
    for frame in ImageSequence.Iterator(opened):
        frame = ImageOps.exif_transpose(frame)
        rgb = frame.convert("RGB")
        if images and rgb.size != images[0].size:
            continue
        images.append(rgb)
        if "A" in frame.getbands():
            masks.append(ImageOps.invert(frame.getchannel("A")))
        else:
            masks.append(Image.new("L", (64, 64), 0))
    return images, masks


def _load_image_validate(files: FileAccess, image: str) -> bool | str:
    if _read_annotated(files, image) is None:
        return f"Invalid image file: {image}"
    return True


def _load_image_fingerprint(files: FileAccess, image: str = "", **_: Any) -> object:
    data = _read_annotated(files, image)
    return None if data is None else hashlib.sha256(data).hexdigest()


def _lora_file(ctx: NodeContext, lora_name: str) -> None:
    """folder_paths.get_full_path_or_raise: the file was listed when the prompt was validated, but
    it may be gone by the time the node runs."""
    if lora_name not in ctx.model_files("loras"):
        raise FileNotFoundError(f"Model in folder 'loras' with filename '{lora_name}' not found.")


async def _lora_loader(
    ctx: NodeContext, model: Model, clip: Clip, lora_name: str, strength_model: float, strength_clip: float
) -> NodeResult:
    if strength_model == 0 and strength_clip == 0:
        return NodeResult((model, clip))
    _lora_file(ctx, lora_name)
    return NodeResult(
        (
            replace(model, loras=_with_lora(model.loras, lora_name, strength_model)),
            replace(clip, loras=_with_lora(clip.loras, lora_name, strength_clip)),
        )
    )


async def _lora_loader_model_only(
    ctx: NodeContext, model: Model, lora_name: str, strength_model: float
) -> NodeResult:
    if strength_model == 0:
        return NodeResult((model,))
    _lora_file(ctx, lora_name)
    return NodeResult((replace(model, loras=_with_lora(model.loras, lora_name, strength_model)),))


async def _unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str) -> NodeResult:
    return NodeResult((Model(unet_name),))


async def _dual_clip_loader(
    ctx: NodeContext, clip_name1: str, clip_name2: str, type: str, device: str = "default"
) -> NodeResult:
    return NodeResult((Clip((clip_name1, clip_name2), type),))


async def _vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    return NodeResult((Vae(vae_name),))


async def _flux_guidance(ctx: NodeContext, conditioning: Conditioning, guidance: float) -> NodeResult:
    return NodeResult((replace(conditioning, guidance=guidance),))


async def _upscale_model_loader(ctx: NodeContext, model_name: str) -> NodeResult:
    return NodeResult((UpscaleModel(model_name, _model_scale(model_name)),))


async def _image_upscale_with_model(
    ctx: NodeContext, upscale_model: UpscaleModel, image: list[Image.Image]
) -> NodeResult:
    # tiled_scale reports one progress step per 512px tile (overlap 32), as ComfyUI's ProgressBar does.
    tiles = sum(math.ceil(item.height / 480) * math.ceil(item.width / 480) for item in image)
    done = 0
    scaled = []
    for item in image:
        per_image = math.ceil(item.height / 480) * math.ceil(item.width / 480)
        for _ in range(per_image):
            done += 1
            await ctx.progress(done, tiles)
        scale = upscale_model.scale
        scaled.append(
            await to_thread.run_sync(_resize, item, item.width * scale, item.height * scale, "lanczos")
        )
    return NodeResult((scaled,))


async def _image_scale_by(
    ctx: NodeContext, image: list[Image.Image], upscale_method: str, scale_by: float
) -> NodeResult:
    scaled = []
    for item in image:
        width, height = round(item.width * scale_by), round(item.height * scale_by)
        scaled.append(await to_thread.run_sync(_resize, item, width, height, upscale_method))
    return NodeResult((scaled,))


async def _empty_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0
) -> NodeResult:
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    return NodeResult(([Image.new("RGB", (width, height), rgb) for _ in range(batch_size)],))


async def _image_blur(
    ctx: NodeContext, image: list[Image.Image], blur_radius: int, sigma: float
) -> NodeResult:
    blur = ImageFilter.GaussianBlur(blur_radius * sigma / 2)
    return NodeResult(([await to_thread.run_sync(item.filter, blur) for item in image],))


async def _test_sleep(ctx: NodeContext, value: Any, seconds: float) -> NodeResult:
    # The testing pack's loop: report elapsed/seconds, then sleep 10 ms, until the time is up.
    start = time.monotonic()
    now = start
    while now < start + seconds:
        now = time.monotonic()
        await ctx.progress(now - start, seconds)
        await ctx.work(0.01)
    return NodeResult((value,))


async def _test_sync_error(ctx: NodeContext, value: Any) -> NodeResult:
    raise RuntimeError("Intentional sync execution error for testing")


async def _save_image_websocket(ctx: NodeContext, images: list[Image.Image]) -> NodeResult:
    for step, image in enumerate(images):
        await ctx.progress(step, len(images), preview=image)
    return NodeResult((), {})


def _always_changed(files: FileAccess, **_: Any) -> object:
    # SaveImageWebsocket.IS_CHANGED returns time.time(): never the same twice, so never cached.
    return uuid.uuid4().hex


# -- the node table ---------------------------------------------------------------------------

_OUTPUT_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
_SAVE_DESCRIPTION = "Saves the input images to your ComfyUI output directory."
_LORA_DESCRIPTION = (
    "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such "
    "as applying styles. Multiple LoRA nodes can be linked together."
)
_LORA_TOOLTIPS = ("The modified diffusion model.", "The modified CLIP model.")


def _ksampler_inputs(catalogue: Catalogue) -> InputTypes:
    return {
        "required": {
            "model": ["MODEL", {"tooltip": "The model used for denoising the input latent."}],
            "seed": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "The random seed used for creating the noise."}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000,
                              "tooltip": "The number of steps used in the denoising process."}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "The Classifier-Free Guidance scale balances creativity and adherence to "
                                         "the prompt. Higher values result in images more closely matching the "
                                         "prompt however too high values will negatively impact quality."}],
            "sampler_name": [list(SAMPLERS), {"tooltip": "The algorithm used when sampling, this can affect the "
                                                         "quality, speed, and style of the generated output."}],
            "scheduler": [list(SCHEDULERS), {"tooltip": "The scheduler controls how noise is gradually removed to "
                                                        "form the image."}],
            "positive": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to "
                                                     "include in the image."}],
            "negative": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to "
                                                     "exclude from the image."}],
            "latent_image": ["LATENT", {"tooltip": "The latent image to denoise."}],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "The amount of denoising applied, lower values will maintain the "
                                             "structure of the initial image allowing for image to image "
                                             "sampling."}],
        }
    }  # fmt: skip


def _save_image_inputs(catalogue: Catalogue) -> InputTypes:
    return {
        "required": {
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": (
                "The prefix for the file to save. This may include formatting information such as "
                "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")}],
        },
        "hidden": dict(_OUTPUT_HIDDEN),
    }  # fmt: skip


def _dual_clip_inputs(catalogue: Catalogue) -> InputTypes:
    encoders = catalogue.folder("text_encoders")
    return {
        "required": {
            "clip_name1": [encoders],
            "clip_name2": [list(encoders)],
            "type": [["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]],
        },
        "optional": {"device": [["default", "cpu"], {"advanced": True}]},
    }


NODE_TYPES: dict[str, NodeType] = {
    node.name: node
    for node in [
        NodeType(
            name="CheckpointLoaderSimple",
            inputs=lambda c: {"required": {"ckpt_name": [
                c.folder("checkpoints"), {"tooltip": "The name of the checkpoint (model) to load."}]}},
            outputs=("MODEL", "CLIP", "VAE"),
            run=_checkpoint_loader,
            category="loaders",
            display_name="Load Checkpoint",
            description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            output_tooltips=(
                "The model used for denoising latents.",
                "The CLIP model used for encoding text prompts.",
                "The VAE model used for encoding and decoding images to and from latent space.",
            ),
        ),
        NodeType(
            name="CLIPTextEncode",
            inputs=lambda c: {"required": {
                "text": ["STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}],
                "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}],
            }},
            outputs=("CONDITIONING",),
            run=_clip_text_encode,
            category="conditioning",
            display_name="CLIP Text Encode (Prompt)",
            description=(
                "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the "
                "diffusion model towards generating specific images."
            ),
            output_tooltips=("A conditioning containing the embedded text used to guide the diffusion model.",),
        ),
        NodeType(
            name="EmptyLatentImage",
            inputs=lambda c: {"required": {
                "width": ["INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "The width of the latent images in pixels."}],
                "height": ["INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "The height of the latent images in pixels."}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096,
                                       "tooltip": "The number of latent images in the batch."}],
            }},
            outputs=("LATENT",),
            run=_empty_latent,
            category="latent",
            display_name="Empty Latent Image",
            description="Create a new batch of empty latent images to be denoised via sampling.",
            output_tooltips=("The empty latent image batch.",),
        ),
        NodeType(
            name="EmptySD3LatentImage",
            inputs=lambda c: {"required": {
                "width": ["INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}],
                "height": ["INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            }},
            outputs=("LATENT",),
            run=_empty_latent,
            category="latent/sd3",
            python_module="comfy_extras.nodes_sd3",
            v3=True,
        ),
        NodeType(
            name="KSampler",
            inputs=_ksampler_inputs,
            outputs=("LATENT",),
            run=_ksampler,
            category="sampling",
            display_name="KSampler",
            description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
            output_tooltips=("The denoised latent.",),
        ),
        NodeType(
            name="VAEDecode",
            inputs=lambda c: {"required": {
                "samples": ["LATENT", {"tooltip": "The latent to be decoded."}],
                "vae": ["VAE", {"tooltip": "The VAE model used for decoding the latent."}],
            }},
            outputs=("IMAGE",),
            run=_vae_decode,
            category="latent",
            display_name="VAE Decode",
            description="Decodes latent images back into pixel space images.",
            output_tooltips=("The decoded image.",),
        ),
        NodeType(
            name="VAEEncode",
            inputs=lambda c: {"required": {"pixels": ["IMAGE"], "vae": ["VAE"]}},
            outputs=("LATENT",),
            run=_vae_encode,
            category="latent",
            display_name="VAE Encode",
        ),
        NodeType(
            name="SaveImage",
            inputs=_save_image_inputs,
            outputs=(),
            run=_save_image,
            category="image",
            display_name="Save Image",
            description=_SAVE_DESCRIPTION,
            output_node=True,
        ),
        NodeType(
            name="PreviewImage",
            inputs=lambda c: {"required": {"images": ["IMAGE"]}, "hidden": dict(_OUTPUT_HIDDEN)},
            outputs=(),
            run=_preview_image,
            category="image",
            display_name="Preview Image",
            description=_SAVE_DESCRIPTION,  # inherited from SaveImage
            output_node=True,
        ),
        NodeType(
            name="LoadImage",
            inputs=lambda c: {"required": {"image": [c.input_images(), {"image_upload": True}]}},
            outputs=("IMAGE", "MASK"),
            run=_load_image,
            category="image",
            display_name="Load Image",
            validate=_load_image_validate,
            validate_inputs=("image",),
            fingerprint=_load_image_fingerprint,
        ),
        NodeType(
            name="LoraLoader",
            inputs=lambda c: {"required": {
                "model": ["MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}],
                "clip": ["CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}],
                "lora_name": [c.folder("loras"), {"tooltip": "The name of the LoRA."}],
                "strength_model": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                             "tooltip": "How strongly to modify the diffusion model. This value "
                                                        "can be negative."}],
                "strength_clip": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                            "tooltip": "How strongly to modify the CLIP model. This value can be "
                                                       "negative."}],
            }},
            outputs=("MODEL", "CLIP"),
            run=_lora_loader,
            category="loaders",
            display_name="Load LoRA",
            description=_LORA_DESCRIPTION,
            output_tooltips=_LORA_TOOLTIPS,
        ),
        NodeType(
            name="LoraLoaderModelOnly",
            inputs=lambda c: {"required": {
                "model": ["MODEL"],
                "lora_name": [c.folder("loras")],
                "strength_model": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}],
            }},
            outputs=("MODEL",),
            run=_lora_loader_model_only,
            category="loaders",
            description=_LORA_DESCRIPTION,  # inherited from LoraLoader, like its two tooltips
            output_tooltips=_LORA_TOOLTIPS,
        ),
        NodeType(
            name="UNETLoader",
            inputs=lambda c: {"required": {
                "unet_name": [c.folder("diffusion_models")],
                "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]],
            }},
            outputs=("MODEL",),
            run=_unet_loader,
            category="advanced/loaders",
            display_name="Load Diffusion Model",
        ),
        NodeType(
            name="DualCLIPLoader",
            inputs=_dual_clip_inputs,
            outputs=("CLIP",),
            run=_dual_clip_loader,
            category="advanced/loaders",
            description=(
                "[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\n"
                "hidream: at least one of t5 or llama, recommended t5 and llama\n"
                "hunyuan_image: qwen2.5vl 7b and byt5 small"
            ),
        ),
        NodeType(
            name="VAELoader",
            # VAELoader.vae_list() appends "pixel_space" to the files in models/vae.
            inputs=lambda c: {"required": {"vae_name": [[*c.folder("vae"), "pixel_space"]]}},
            outputs=("VAE",),
            run=_vae_loader,
            category="loaders",
            display_name="Load VAE",
        ),
        NodeType(
            name="FluxGuidance",
            inputs=lambda c: {"required": {
                "conditioning": ["CONDITIONING", {}],
                "guidance": ["FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}],
            }},
            outputs=("CONDITIONING",),
            run=_flux_guidance,
            category="advanced/conditioning/flux",
            python_module="comfy_extras.nodes_flux",
            v3=True,
        ),
        NodeType(
            name="UpscaleModelLoader",
            inputs=lambda c: {"required": {
                "model_name": ["COMBO", {"multiselect": False, "options": c.folder("upscale_models")}],
            }},
            outputs=("UPSCALE_MODEL",),
            run=_upscale_model_loader,
            category="loaders",
            display_name="Load Upscale Model",
            python_module="comfy_extras.nodes_upscale_model",
            v3=True,
        ),
        NodeType(
            name="ImageUpscaleWithModel",
            inputs=lambda c: {"required": {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]}},
            outputs=("IMAGE",),
            run=_image_upscale_with_model,
            category="image/upscaling",
            display_name="Upscale Image (using Model)",
            python_module="comfy_extras.nodes_upscale_model",
            v3=True,
        ),
        NodeType(
            name="ImageScaleBy",
            inputs=lambda c: {"required": {
                "image": ["IMAGE"],
                "upscale_method": [list(UPSCALE_METHODS)],
                "scale_by": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}],
            }},
            outputs=("IMAGE",),
            run=_image_scale_by,
            category="image/upscaling",
            display_name="Upscale Image By",
        ),
        NodeType(
            name="EmptyImage",
            inputs=lambda c: {"required": {
                "width": ["INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}],
                "height": ["INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
                "color": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}],
            }},
            outputs=("IMAGE",),
            run=_empty_image,
            category="image",
        ),
        NodeType(
            name="ImageBlur",
            inputs=lambda c: {"required": {
                "image": ["IMAGE", {}],
                "blur_radius": ["INT", {"default": 1, "min": 1, "max": 31, "step": 1}],
                "sigma": ["FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}],
            }},
            outputs=("IMAGE",),
            run=_image_blur,
            category="image/postprocessing",
            python_module="comfy_extras.nodes_post_processing",
            v3=True,
        ),
        NodeType(
            name="TestSleep",
            inputs=lambda c: {
                "required": {
                    "value": ["*", {}],
                    "seconds": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 9999.0, "step": 0.01,
                                          "tooltip": "The amount of seconds to sleep."}],
                },
                "hidden": {"unique_id": "UNIQUE_ID"},
            },
            outputs=("*",),
            run=_test_sleep,
            category="_for_testing",
            display_name="Test Sleep",
            python_module="custom_nodes.testing-pack",
            is_async=True,
        ),
        NodeType(
            name="TestSyncError",
            inputs=lambda c: {"required": {"value": ["*", {}]}},
            outputs=("*",),
            run=_test_sync_error,
            category="experimental/async",
            display_name="Test Sync Error",
            python_module="custom_nodes.testing-pack",
        ),
        NodeType(
            name="SaveImageWebsocket",
            inputs=lambda c: {"required": {"images": ["IMAGE"]}},
            outputs=(),
            run=_save_image_websocket,
            category="image",
            python_module="custom_nodes.websocket_image_save",
            output_node=True,
            fingerprint=_always_changed,
        ),
    ]
}  # fmt: skip
