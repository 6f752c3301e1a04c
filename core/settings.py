"""Configuration: `ATELIER_*` environment variables over built-in defaults, validated once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from core.errors import InvalidInput

ENV_PREFIX = "ATELIER_"
# The lanes runs are dispatched in (queues of the procrastinate dispatch).
WORKER_QUEUES = ("image", "training", "publishing")
# A host name or IP address as a Host header carries it, optionally with a port.
HOST_NAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


def default_home() -> Path:
    """The platform's user data directory, e.g. `~/.local/share/atelier` on Linux."""
    from platformdirs import user_data_path

    return user_data_path("atelier", appauthor=False)


class Settings(BaseModel):
    """Every option, with the environment variable that sets it (name upper-cased, `ATELIER_` prefix)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default_factory=default_home, description="Data directory: ledger and artifacts.")
    backend: Literal["local", "comfyui"] = Field(
        default="local",
        description="Backend for new runs: the built-in preview renderer, or ComfyUI servers.",
    )
    comfyui_urls: str = Field(
        default="http://127.0.0.1:8188", description="ComfyUI servers of the pool, comma-separated base URLs."
    )
    comfyui_queue_depth: int = Field(
        default=2, ge=1, le=8, description="Prompts kept queued on each ComfyUI server, so it never idles."
    )
    workflows_dir: Path | None = Field(default=None, description="Folder of your own ComfyUI workflows.")
    input_dirs: str = Field(
        default="",
        description="Folders (path-separated) whose images tools may read, besides ATELIER_HOME/inputs.",
    )
    fetch_hosts: str = Field(
        default="", description="Hosts (comma-separated) source-image URLs may name, besides loopback."
    )
    max_input_bytes: int = Field(
        default=25_000_000, ge=1_000, le=500_000_000, description="Largest source image accepted."
    )
    fetch_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Time limit of fetching one source URL, body included."
    )
    local_step_ms: float = Field(default=25.0, ge=0, le=60_000, description="Preview renderer time per step.")
    local_concurrency: int = Field(default=2, ge=1, le=64, description="Preview runs at once.")
    render_memory_mb: int = Field(
        default=256,
        ge=64,
        le=1_048_576,
        description="Memory the preview renders in flight may hold together.",
    )
    trainer: Literal["preview", "aitoolkit"] = Field(
        default="preview",
        description="LoRA trainer: the embedded preview trainer, or ai-toolkit (GPU) in ATELIER_AITOOLKIT_DIR.",
    )
    aitoolkit_dir: Path | None = Field(
        default=None, description="ai-toolkit's checkout (the folder of run.py)."
    )
    aitoolkit_python: str = Field(
        default="python3", min_length=1, description="The Python that runs ai-toolkit (its venv's python)."
    )
    aitoolkit_base_model: str = Field(
        default="black-forest-labs/FLUX.1-dev",
        min_length=1,
        max_length=300,
        description="ai-toolkit's model.name_or_path: the base model LoRAs are trained for.",
    )
    aitoolkit_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="After a cancel, seconds ai-toolkit gets to exit before SIGKILL.",
    )
    preview_train_step_ms: float = Field(
        default=2.0, ge=0, le=60_000, description="Preview trainer time per step (1,000 steps: 2 s)."
    )
    training_concurrency: int = Field(default=1, ge=1, le=16, description="Training runs at once.")
    training_timeout_s: float = Field(
        default=172_800.0, gt=0, description="Per-attempt time limit of a training run (48 h)."
    )
    products_timeout_s: float = Field(
        default=14_400.0,
        gt=0,
        description="Per-attempt time limit of a products or publish run (4 h: it waits for its designs' "
        "image runs, which have their own limit, and for the platforms' rate limits).",
    )
    comfyui_loras_dir: Path | None = Field(
        default=None,
        description="Where the ComfyUI servers load LoRAs (shared folder); trained LoRAs are installed there.",
    )
    training_min_side: int = Field(
        default=256, ge=16, le=4096, description="Smallest side a training image may have, in pixels."
    )
    training_max_pixels: int = Field(
        default=50_000_000,
        ge=1_000_000,
        le=500_000_000,
        description="Most pixels a training image may have (checked before decoding: no decompression bombs).",
    )
    max_character_images: int = Field(
        default=200, ge=1, le=10_000, description="Training images per character."
    )
    max_upload_bytes: int = Field(
        default=300_000_000,
        ge=1_000_000,
        le=10_000_000_000,
        description="Largest multipart upload (several training images in one request).",
    )
    enabled_platforms: str = Field(
        default="storefront",
        description="Platforms products are published on (comma-separated: storefront, printify, shopify).",
    )
    catalog: Path | None = Field(
        default=None, description="A JSON file of product types over the built-in catalog."
    )
    printify_token: SecretStr | None = Field(default=None, description="Printify personal access token.")
    printify_shop_id: str | None = Field(
        default=None, pattern=r"^[0-9]{1,20}$", description="Printify shop id."
    )
    printify_url: str = Field(default="https://api.printify.com/v1", description="Printify's API base URL.")
    shopify_store: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,60}$",
        description="Shopify store name (<name>.myshopify.com).",
    )
    shopify_access_token: SecretStr | None = Field(
        default=None, description="Shopify Admin API access token."
    )
    shopify_client_id: str | None = Field(
        default=None, description="Shopify app client id (client-credentials grant)."
    )
    shopify_client_secret: SecretStr | None = Field(default=None, description="Shopify app client secret.")
    shopify_api_version: str = Field(
        default="2026-10",
        pattern=r"^20[0-9]{2}-(01|04|07|10)$",
        description="Shopify Admin API version (pinned).",
    )
    shopify_url: str | None = Field(
        default=None, description="Shopify base URL override (default https://<store>.myshopify.com)."
    )
    s3_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint for artifacts, like http://127.0.0.1:9000 or "
        "https://s3.us-east-1.amazonaws.com; unset: artifacts are files under ATELIER_HOME.",
    )
    s3_bucket: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        validate_default=True,
        description="The bucket artifacts are stored in (it must exist).",
    )
    s3_access_key_id: SecretStr | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="S3 secret access key. Without the pair, the usual AWS credentials (AWS_* variables, "
        "the instance's role) are used.",
    )
    s3_region: str = Field(
        default="us-east-1", pattern=r"^[a-z0-9-]{1,40}$", description="The bucket's S3 region."
    )
    s3_prefix: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)?/?$",
        description="Key prefix inside the bucket (e.g. atelier/), so several installs can share one.",
    )
    s3_presign_s: int = Field(
        default=0,
        ge=0,
        le=604_800,
        description="With S3: run files are answered with a redirect to a presigned URL valid this many "
        "seconds (clients then download from the bucket itself); 0: Atelier streams them.",
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="Attempts per run before it fails.")
    run_timeout_s: float = Field(default=900.0, gt=0, description="Per-attempt time limit of a run.")
    retry_backoff_s: float = Field(default=1.0, ge=0, le=600, description="First retry delay; doubles.")
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL ledger (postgresql://user:password@host:5432/db) shared by several "
        "processes and machines, instead of the SQLite file in ATELIER_HOME. Needs the `postgres` extra.",
    )
    dispatch: Literal["in-process", "procrastinate"] = Field(
        default="in-process",
        description="How accepted runs reach the processes that execute them: in-process (this process's "
        "own queues, one box) or procrastinate (a task queue in ATELIER_DATABASE_URL that `atelier worker` "
        "nodes take runs from; needs the `postgres` extra).",
    )
    execute: bool = Field(
        default=False,
        description="With ATELIER_DISPATCH=procrastinate: `atelier serve` / `atelier mcp` also execute runs "
        "(as a worker on ATELIER_WORKER_QUEUES); by default they only accept and answer.",
    )
    worker_queues: str = Field(
        default="image,training,publishing",
        description="The lanes (comma-separated: image, training, publishing) whose runs a worker takes.",
    )
    worker_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Runs a worker holds at once in each of its queues. Default: as many as that lane "
        "runs at once (the image backend's concurrency, the training or publishing slots), so no run "
        "waits on a busy worker while another is idle.",
    )
    worker_heartbeat_s: float = Field(
        default=10.0, gt=0, le=3600, description="How often a worker tells the database it is alive."
    )
    worker_stalled_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="A worker silent this long is presumed dead: its runs are queued again for another worker.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=200,
        description="Most connections of this process's ledger pool on ATELIER_DATABASE_URL (the event "
        "relay opens 2 more, a worker's task queue its own).",
    )
    ledger_sync: Literal["normal", "full"] = Field(
        default="normal", description="SQLite synchronous mode: normal survives crashes, full power loss."
    )
    ledger_busy_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long a ledger write waits for another process's write lock (SQLite), or a call "
        "for a connection to the database (PostgreSQL), before it is refused.",
    )
    thumbnail_px: int = Field(default=384, ge=64, le=1024, description="Longest side of MCP thumbnails.")
    sse_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Seconds of quiet after which a Server-Sent Events stream sends a keep-alive.",
    )
    host: str = Field(default="127.0.0.1", description="`atelier serve` bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="`atelier serve` port.")
    api_token: SecretStr | None = Field(default=None, description="Bearer token; required off loopback.")
    allowed_hosts: str = Field(
        default="",
        description="Host names (comma-separated, optionally with :port) the Host header may name, "
        "besides the bind address and loopback.",
    )
    allowed_origins: str = Field(
        default="",
        description="Web origins (comma-separated, like http://localhost:3000) whose pages may call the API.",
    )
    root_contract: Literal["adgen", "comfygen", "pod", "isengard", "desktop"] | None = Field(
        default=None, description="`atelier serve` also serves this REST contract at / (besides its prefix)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    toolsets: str = Field(
        default="",
        description="MCP toolsets to offer, comma-separated: generate, runs, characters, products, "
        "publishing. Default: all.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `ATELIER_*` variables (blank ones ignored), then `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper(), "").strip()
            if raw:
                values[name] = (
                    raw.lower()
                    if name in ("backend", "dispatch", "ledger_sync", "log_level", "root_contract", "trainer")
                    else raw
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else "settings"
            raise InvalidInput(ENV_PREFIX + name.upper(), error["msg"]) from None

    @field_validator("enabled_platforms")
    @classmethod
    def _known_platforms(cls, value: str) -> str:
        unknown = [p for p in _split(value, ",") if p.lower() not in ("storefront", "printify", "shopify")]
        if unknown:
            raise ValueError(f"unknown platform {unknown[0]!r}: use storefront, printify and/or shopify")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parsed = urlsplit(value.get_secret_value())
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("postgresql", "postgres") or not parsed.path.strip("/"):
            # The URL itself is not repeated: it may hold a password.
            raise ValueError("is not a URL like postgresql://user@127.0.0.1:5432/atelier")
        return value

    @field_validator("worker_queues")
    @classmethod
    def _queues_are_lanes(cls, value: str) -> str:
        names = [q.lower() for q in _split(value, ",")]
        unknown = [q for q in names if q not in WORKER_QUEUES]
        if unknown or not names:
            raise ValueError("name one or more of image, training, publishing (comma-separated)")
        return ",".join(dict.fromkeys(names))

    @field_validator("dispatch")
    @classmethod
    def _procrastinate_needs_postgres(cls, value: str, info: ValidationInfo) -> str:
        if value == "procrastinate" and info.data.get("database_url") is None:
            raise ValueError(
                "procrastinate needs ATELIER_DATABASE_URL (postgresql://...): the task queue lives in "
                "the same database as the ledger"
            )
        return value

    @field_validator("worker_stalled_s")
    @classmethod
    def _stalled_after_missed_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("worker_heartbeat_s")
        if heartbeat is not None and value < 2 * heartbeat:
            # A live worker whose heartbeat is merely late must not be taken for dead: its runs
            # would be run twice.
            raise ValueError(f"must be at least twice ATELIER_WORKER_HEARTBEAT_S ({heartbeat:g} s)")
        return value

    @field_validator("comfyui_urls")
    @classmethod
    def _urls_are_http(cls, value: str) -> str:
        for url in _split(value, ","):
            parsed = urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
                raise ValueError(f"{url!r} is not a base URL like http://127.0.0.1:8188")
        if not _split(value, ","):
            raise ValueError("name at least one ComfyUI server, e.g. http://127.0.0.1:8188")
        return value

    @field_validator("s3_url")
    @classmethod
    def _s3_url_is_an_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = urlsplit(value)
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            parsed = None
        # Credentials have their own (secret) settings: a URL is logged and shown in health.
        if (
            parsed is None
            or parsed.scheme not in ("http", "https")
            or not parsed.hostname
            or parsed.username is not None
            or parsed.query
            or parsed.fragment
        ):
            raise ValueError(
                "not an endpoint URL like http://127.0.0.1:9000 (credentials go in "
                "ATELIER_S3_ACCESS_KEY_ID / ATELIER_S3_SECRET_ACCESS_KEY, not in the URL)"
            )
        return value.rstrip("/")

    @field_validator("s3_bucket")
    @classmethod
    def _s3_bucket_with_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("s3_url") is not None:
            raise ValueError("name the bucket that ATELIER_S3_URL's artifacts go in")
        return value

    @field_validator("s3_secret_access_key")
    @classmethod
    def _s3_keys_in_pairs(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (value is None) != (info.data.get("s3_access_key_id") is None):
            raise ValueError("set both ATELIER_S3_ACCESS_KEY_ID and ATELIER_S3_SECRET_ACCESS_KEY, or neither")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_host_names(cls, value: str) -> str:
        for host in _split(value, ","):
            if not HOST_NAME.fullmatch(host):
                raise ValueError(
                    f"{host!r} is not a host name like atelier.lan or atelier.lan:8000 (no scheme)"
                )
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        for origin in _split(value, ","):
            try:
                parsed = urlsplit(origin)
                parsed.port  # noqa: B018 - raises on a malformed port
            except ValueError:
                parsed = None
            if (
                parsed is None
                or parsed.scheme not in ("http", "https")
                or not parsed.hostname
                or parsed.path not in ("", "/")
                or parsed.query
                or parsed.fragment
                or parsed.username is not None
            ):
                raise ValueError(
                    f"{origin!r} is not an origin like http://localhost:3000 (scheme://host[:port])"
                )
        return value

    @property
    def worker_queue_list(self) -> list[str]:
        """ATELIER_WORKER_QUEUES as a list (checked, lower-case, without repeats)."""
        return _split(self.worker_queues, ",")

    @property
    def comfyui_servers(self) -> list[str]:
        return [url.rstrip("/") for url in _split(self.comfyui_urls, ",")]

    @property
    def allowed_input_dirs(self) -> list[Path]:
        return [self.inputs_dir, *(Path(d).expanduser() for d in _split(self.input_dirs, os.pathsep))]

    @property
    def allowed_fetch_hosts(self) -> set[str]:
        return {host.lower() for host in _split(self.fetch_hosts, ",")}

    @property
    def allowed_host_names(self) -> set[str]:
        """ATELIER_ALLOWED_HOSTS, lower-cased: `name` (any port) or `name:port`."""
        return {host.lower().rstrip(".") for host in _split(self.allowed_hosts, ",")}

    @property
    def allowed_origin_list(self) -> list[str]:
        """ATELIER_ALLOWED_ORIGINS as browsers send them: lower-case, no trailing slash."""
        return [origin.lower().rstrip("/") for origin in _split(self.allowed_origins, ",")]

    @property
    def max_request_bytes(self) -> int:
        """Largest HTTP request body: a source image at the size cap, base64-encoded, plus the JSON around it."""
        return self.max_input_bytes * 4 // 3 + 1_000_000

    @property
    def inputs_dir(self) -> Path:
        return self.home / "inputs"

    @property
    def database_where(self) -> str | None:
        """ATELIER_DATABASE_URL without its password (what logs and health may show), or None."""
        if self.database_url is None:
            return None
        return redacted_url(self.database_url.get_secret_value())

    @property
    def ledger_path(self) -> Path:
        return self.home / "ledger.sqlite3"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def platform_names(self) -> list[str]:
        """ATELIER_ENABLED_PLATFORMS, lower-cased, in order, without repeats."""
        return list(dict.fromkeys(name.lower() for name in _split(self.enabled_platforms, ",")))

    @property
    def characters_dir(self) -> Path:
        return self.home / "characters"

    @property
    def training_dir(self) -> Path:
        """Each training run's working folder (`<run id>/`): its dataset, checkpoints and log."""
        return self.home / "training"


def redacted_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***`: what logs, errors and health may show."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a URL that cannot be read)"
    if parts.query:  # libpq also takes `?password=...`
        pairs = [pair.partition("=") for pair in parts.query.split("&")]
        parts = parts._replace(
            query="&".join(
                f"{name}{eq}{'***' if name.lower() == 'password' else value}" for name, eq, value in pairs
            )
        )
    if password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}")
    return urlunsplit(parts)


def _split(value: str, separator: str) -> list[str]:
    return [part.strip() for part in value.split(separator) if part.strip()]
