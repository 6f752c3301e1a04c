"""What POD clients send and get: the document's requests, jobs, results, metrics and health."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

DEFAULT_MAX_AGE_MS = 86_400_000
MAX_DESIGNS = 16
Priority = Literal["low", "normal", "high", "urgent"]
LogType = Literal["INFO", "SUCCESS", "WARNING", "ERROR"]
HealthWord = Literal["healthy", "degraded", "unhealthy"]
JobType = Literal["generate", "batch", "custom"]

STRICT = ConfigDict(extra="forbid", strict=True)


class ProductTerms(BaseModel):
    """What every products request shares: the product types, publishing, and the listing's terms."""

    model_config = STRICT

    productTypes: list[str] = Field(
        min_length=1, max_length=20, description="Catalog product types: tshirt, hoodie, poster, mug."
    )
    autoPublish: bool = Field(default=True, description="Publish on the platforms (false: drafts).")
    title: str | None = Field(default=None, max_length=200, description="Atelier extension: listing title.")
    description: str | None = Field(
        default=None, max_length=5000, description="Atelier extension: listing description."
    )
    price: float | None = Field(
        default=None, gt=0, le=100_000, description="Atelier extension: price (e.g. 24.99); default per type."
    )


class GenerateRequest(ProductTerms):
    """One design prompt to make into products (the request of a generate job, or one batch item)."""

    prompt: str | None = Field(default=None, max_length=4000, description="Used as is.")
    theme: str | None = Field(default=None, max_length=200, description="Composes the prompt if none.")
    style: str | None = Field(default=None, max_length=200, description="Composes the prompt if none.")
    niche: str | None = Field(default=None, max_length=200, description="Composes the prompt if none.")
    count: int = Field(default=1, ge=1, le=MAX_DESIGNS, description="Designs to generate.")
    # Checked here, not only when the products run submits its designs: a bad size is a 400 now.
    width: int | None = Field(
        default=None, ge=64, le=4096, multiple_of=8, description="Atelier extension: design pixels."
    )
    height: int | None = Field(
        default=None, ge=64, le=4096, multiple_of=8, description="Atelier extension: design pixels."
    )
    steps: int | None = Field(default=None, ge=1, le=150, description="Atelier extension: sampler steps.")
    seed: int | None = Field(default=None, description="Atelier extension: design n uses seed + n - 1.")

    @model_validator(mode="after")
    def _has_a_prompt_or_theme(self) -> GenerateRequest:
        if not (self.prompt or "").strip() and not (self.theme or "").strip():
            raise ValueError("give a prompt, or a theme (with an optional style and niche) to compose one")
        return self


class CustomRequest(ProductTerms):
    """Your own design images made into products: no generation."""

    designs: list[str] = Field(
        min_length=1,
        max_length=MAX_DESIGNS,
        description="Each an image: an http(s) URL, base64 (or a data: URL), or a path the server may read.",
    )


class QuickGenerate(GenerateRequest):
    priority: Priority = Field(default="normal", description="Atelier extension: queue priority.")
    maxRetries: int | None = Field(default=None, ge=0, le=19, description="Atelier extension.")


class BatchRequest(BaseModel):
    model_config = STRICT

    items: list[GenerateRequest] = Field(min_length=1, max_length=100, description="One per design.")


class BatchBody(BatchRequest):
    priority: Priority = "normal"
    maxRetries: int | None = Field(default=None, ge=0, le=19, description="Atelier extension.")


class JobBody(BaseModel):
    model_config = STRICT

    type: JobType
    request: dict[str, Any] = Field(
        description="generate: {prompt or theme, productTypes, ...}; batch: {items: [...]}; "
        "custom: {designs: [image...], productTypes, ...}."
    )
    priority: Priority = "normal"
    maxRetries: int | None = Field(default=None, ge=0, le=19, description="Default: from config.")


class CleanupBody(BaseModel):
    model_config = STRICT

    maxAge: float = Field(default=DEFAULT_MAX_AGE_MS, ge=0, description="Milliseconds.")


class GeneratedImage(BaseModel):
    id: str
    url: str
    prompt: str


class ProductEntry(BaseModel):
    platform: str
    productId: str = Field(description="The platform's own product id.")
    url: str | None
    type: str
    status: str = Field(description="Atelier extension: draft or published on that platform.")
    title: str = Field(description="Atelier extension.")
    atelierProductId: str = Field(description="Atelier extension: the product in Atelier's catalog.")


class ProductFileEntry(BaseModel):
    role: Literal["print", "mockup"]
    name: str = Field(description="The print area (front, back, wrap) or the mockup's colour.")
    url: str
    width: int
    height: int
    dpi: int | None


class GenerateResult(BaseModel):
    success: bool
    generatedImages: list[GeneratedImage]
    products: list[ProductEntry]
    errors: list[str]
    totalTime: int | None
    files: dict[str, list[ProductFileEntry]] = Field(
        default_factory=dict,
        description="Atelier extension: each product's print files and mockups, by Atelier product id.",
    )


class BatchResult(BaseModel):
    results: list[GenerateResult]
    errors: list[str]
    total: int


class LogLine(BaseModel):
    timestamp: int
    message: str
    type: LogType


class Job(BaseModel):
    id: str
    type: JobType
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    priority: str
    progress: int
    request: dict[str, Any] | None
    createdAt: int
    startedAt: int | None
    completedAt: int | None
    result: GenerateResult | BatchResult | None
    error: str | None
    retryCount: int
    maxRetries: int
    logs: list[LogLine]


class JobList(RootModel[list[Job]]):
    pass


class Submitted(BaseModel):
    jobId: str
    job: Job


class Success(BaseModel):
    success: bool


class Cleared(BaseModel):
    cleared: int


class Metrics(BaseModel):
    totalJobs: int
    completedJobs: int
    failedJobs: int
    runningJobs: int
    pendingJobs: int
    averageJobTime: int
    successRate: float
    uptime: int
    lastActivity: int


class Services(BaseModel):
    comfyui: bool
    printify: bool
    shopify: bool
    storefront: bool = Field(description="Atelier extension: the embedded shop (/shop).")


class Health(BaseModel):
    status: HealthWord
    uptime: int
    metrics: Metrics
    services: Services


class InfoConfig(BaseModel):
    maxConcurrent: int
    maxRetries: int
    persistenceEnabled: bool
    monitoringEnabled: bool


class Info(BaseModel):
    name: str
    version: str
    config: InfoConfig


class Error(BaseModel):
    error: str
