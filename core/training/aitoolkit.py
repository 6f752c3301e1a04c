"""The ai-toolkit trainer (ostris/ai-toolkit) run as a subprocess: dataset, job YAML, progress, cancel, result.

One attempt in `job.workdir`:
- `dataset/`: the images (hard-linked, copied across file systems) as `0000.png`, ... with
  `0000.txt` captions that carry the trigger word; rewritten in place, so a later attempt keeps
  ai-toolkit's latent cache for the images that did not change.
- `aitoolkit.yaml`: the job config (keys in `_config`); `output/<name>/` is ai-toolkit's
  training folder: checkpoints `<name>_<step:09d>.safetensors`, then the final `<name>.safetensors`.
- `aitoolkit.pid`: the trainer's process group while it runs (see `core.training.processes`).

`<ATELIER_AITOOLKIT_PYTHON> run.py aitoolkit.yaml` runs in ATELIER_AITOOLKIT_DIR in its own
session; its stdout and stderr share one pipe, read as they come and parsed by
`core.training.tqdm.TrainerOutput` into progress and a few log lines.

Decisions:
- Cancel (anyio cancellation: a cancelled run, a timeout, Atelier stopping) sends SIGTERM to the
  whole group and SIGKILL after `grace_s`; the attempt returns only once none of it runs. The
  group is stopped after a normal exit too: a worker left behind would hold the GPU.
- Resume: ai-toolkit resumes by itself from the newest save in its training folder, so nothing
  is passed to it; the adapter reads `Found step N in metadata` for `resumed_from_step`.
- A CUDA out-of-memory is not retryable (the same settings run out again). Other failures are
  retryable: a killed trainer, a lost download, a half-written final file resume from the last
  checkpoint, so trying again costs little; the engine bounds the attempts.
- A final file whose header does not parse is deleted (ai-toolkit would otherwise resume from it,
  as the newest save, and fail to load it) and never returned.
- YAML is written by a small emitter here rather than a dependency: the config is plain nested
  mappings, and floats are always written with a dot (`1.0e-05`), which PyYAML (ai-toolkit's
  parser, YAML 1.1) needs to read them as numbers, not strings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from core.backends import ProgressCallback
from core.errors import BackendError
from core.training import LogCallback, TrainedLora, TrainerParameter, TrainingJob
from core.training.parameters import standard_parameters
from core.training.processes import record_group, stop_group, stop_recorded_group
from core.training.safetensors import SafetensorsError, read_header
from core.training.tqdm import TrainerOutput

OUT_OF_MEMORY = "the GPU ran out of memory; lower resolution or batch_size, or enable quantize"
_STANDARD_WIRED = {"steps", "learning_rate", "batch_size", "resolution", "lora_rank", "optimizer", "scheduler", "precision"}  # fmt: skip
_OWN = (
    TrainerParameter("lora_alpha", "int", 16, "LoRA alpha (network.linear_alpha)", 1, 256),
    TrainerParameter(
        "save_every", "int", 250, "Save a checkpoint every N steps (restarts resume from it)", 10, 5000
    ),
    TrainerParameter("saves_to_keep", "int", 4, "Checkpoints kept (older ones are deleted)", 1, 50),
    TrainerParameter("quantize", "bool", True, "Quantize the base model to 8 bits (less GPU memory)"),
    TrainerParameter(
        "caption_dropout_rate", "float", 0.05, "Share of steps trained without caption", 0.0, 0.5
    ),
)
# Resolution buckets ai-toolkit trains at, up to the requested resolution.
_BUCKETS = (512, 768, 1024, 1536, 2048)
# Bytes read from the trainer's pipe at once.
_CHUNK = 65536


class AIToolkitTrainer:
    """ai-toolkit as a subprocess (see the module docstring)."""

    name = "aitoolkit"

    def __init__(
        self,
        *,
        directory: Path | None,
        python: str,
        base_model: str,
        grace_s: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.python = python
        self.base_model = base_model
        self.grace_s = grace_s
        # Added to Atelier's environment for the trainer (e.g. CUDA_VISIBLE_DEVICES, HF_HOME).
        self.env = dict(env or {})

    def parameters(self) -> dict[str, TrainerParameter]:
        """The standard parameters (all wired) and ai-toolkit's own."""
        declared = standard_parameters(_STANDARD_WIRED)
        declared.update({spec.name: spec for spec in _OWN})
        return declared

    async def health(self) -> dict[str, Any]:
        """Ready when ai-toolkit's run.py and its Python are both there."""
        view: dict[str, Any] = {
            "dir": str(self.directory) if self.directory else None,
            "python": self.python,
            "base_model": self.base_model,
        }
        problem = self._problem()
        return {"ok": problem is None, **view, **({"reason": problem} if problem else {})}

    def _problem(self) -> str | None:
        if self.directory is None:
            return "ATELIER_AITOOLKIT_DIR is not set (ai-toolkit's checkout, the folder of run.py)"
        if not (self.directory / "run.py").is_file():
            return f"{self.directory} has no run.py (ATELIER_AITOOLKIT_DIR must be ai-toolkit's checkout)"
        if shutil.which(self._python()) is None:
            return f"ATELIER_AITOOLKIT_PYTHON {self.python!r} is not an executable"
        return None

    def _python(self) -> str:
        # A relative path with a folder in it (`venv/bin/python`) is ai-toolkit's own venv, relative
        # to its checkout, where the process starts; a bare name is looked up on PATH.
        if self.directory is not None and os.sep in self.python and not os.path.isabs(self.python):
            return str(self.directory / self.python)
        return self.python

    async def train(
        self, job: TrainingJob, on_progress: ProgressCallback, *, on_log: LogCallback | None = None
    ) -> TrainedLora:
        """Train one attempt; `on_log` gets a few lines for the run's log (resume, tenths, errors)."""
        problem = self._problem()
        if problem:
            raise BackendError(f"ai-toolkit cannot start: {problem}", retryable=False)
        log = on_log or (lambda line: None)
        workdir = job.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        pid_file = workdir / "aitoolkit.pid"
        leftover = await stop_recorded_group(pid_file, self.grace_s)
        if leftover:
            log(f"stopped ai-toolkit (process group {leftover}) left running by an earlier attempt")
        final = workdir / "output" / job.name / f"{job.name}.safetensors"
        _discard_broken_saves(final.parent, job.name, log)
        dataset = await anyio.to_thread.run_sync(_write_dataset, workdir / "dataset", job)
        config_path = workdir / "aitoolkit.yaml"
        _write_atomic(config_path, to_yaml(self._config(job, dataset)))
        (workdir / "output").mkdir(exist_ok=True)

        output = TrainerOutput()
        code = await self._run(config_path, pid_file, output, on_progress, log)
        for line in output.take_log():
            log(line)
        return self._result(job, final, code, output, log)

    async def _run(
        self,
        config_path: Path,
        pid_file: Path,
        output: TrainerOutput,
        on_progress: ProgressCallback,
        log: LogCallback,
    ) -> int:
        """Run ai-toolkit to its end (or until cancelled); its exit code. Nothing of it runs after."""
        assert self.directory is not None
        process: Process = await anyio.open_process(
            [self._python(), "run.py", str(config_path)],
            cwd=self.directory,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pgid = process.pid
        try:
            record_group(pid_file, pgid)
            log(f"ai-toolkit started (process group {pgid}): {config_path.name}")
            drained = anyio.Event()

            async def read() -> None:
                assert process.stdout is not None
                try:
                    while True:
                        try:
                            chunk = await process.stdout.receive(_CHUNK)
                        except (anyio.EndOfStream, anyio.ClosedResourceError):
                            break
                        for update in output.feed(chunk):
                            on_progress(update)
                        for line in output.take_log():
                            log(line)
                    for update in output.finish():
                        on_progress(update)
                finally:
                    drained.set()

            async with anyio.create_task_group() as group:
                group.start_soon(read)
                code = await process.wait()
                # Workers it left behind hold the pipe open (and the GPU): stop them, then give the
                # reader a moment for the last bytes.
                await stop_group(pgid, self.grace_s)
                with anyio.move_on_after(5):
                    await drained.wait()
                group.cancel_scope.cancel()
            return code
        finally:
            with anyio.CancelScope(shield=True):
                await stop_group(pgid, self.grace_s)
                # Bounded: a trainer stuck in the kernel (a hung GPU driver) must not hang Atelier.
                with anyio.move_on_after(10):
                    await process.wait()
                    await process.aclose()
                pid_file.unlink(missing_ok=True)

    def _result(
        self, job: TrainingJob, final: Path, code: int, output: TrainerOutput, log: LogCallback
    ) -> TrainedLora:
        tail = "\n".join(output.tail()[-12:])
        if output.out_of_memory:
            raise BackendError(f"{OUT_OF_MEMORY}.\nai-toolkit's last lines:\n{tail}", retryable=False)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            raise BackendError(f"ai-toolkit was killed by {name}.\nIts last lines:\n{tail}")
        if code != 0:
            raise BackendError(f"ai-toolkit exited with code {code}.\nIts last lines:\n{tail}")
        if not final.exists():
            raise BackendError(f"ai-toolkit ended without writing {final.name}.\nIts last lines:\n{tail}")
        try:
            header = read_header(final)
        except (OSError, SafetensorsError) as error:
            _discard_broken(final, log)
            raise BackendError(f"ai-toolkit's {final.name} is not a complete LoRA file ({error})") from None
        resumed = output.resumed_from_step or 0
        tensors = sum(name != "__metadata__" for name in header)
        log(f"ai-toolkit finished: {final.name}, {tensors} tensors")
        return TrainedLora(
            path=final,
            steps=int(job.params["steps"]),
            base_model=self.base_model,
            resumed_from_step=resumed,
            metadata={"trainer": "aitoolkit", **header.get("__metadata__", {})},
        )

    def _config(self, job: TrainingJob, dataset: Path) -> dict[str, Any]:
        params = job.params
        resolution = int(params["resolution"])
        buckets = [size for size in _BUCKETS if size < resolution] + [resolution]
        process = {
            "type": "sd_trainer",
            "training_folder": str(job.workdir / "output"),
            "device": "cuda:0",
            "trigger_word": job.trigger_word,
            "network": {"type": "lora", "linear": params["lora_rank"], "linear_alpha": params["lora_alpha"]},
            "save": {
                "dtype": "float16",
                "save_every": params["save_every"],
                "max_step_saves_to_keep": params["saves_to_keep"],
                "push_to_hub": False,
            },
            "datasets": [
                {
                    "folder_path": str(dataset),
                    "caption_ext": "txt",
                    "caption_dropout_rate": float(params["caption_dropout_rate"]),
                    "shuffle_tokens": False,
                    "cache_latents_to_disk": True,
                    "resolution": buckets,
                }
            ],
            "train": {
                "batch_size": params["batch_size"],
                "steps": params["steps"],
                "gradient_accumulation_steps": 1,
                "train_unet": True,
                "train_text_encoder": False,
                "gradient_checkpointing": True,
                "noise_scheduler": params["scheduler"],
                "optimizer": params["optimizer"],
                "lr": float(params["learning_rate"]),
                "dtype": params["precision"],
            },
            "model": {
                "name_or_path": self.base_model,
                "is_flux": "flux" in self.base_model.lower(),
                "quantize": bool(params["quantize"]),
            },
        }
        return {
            "job": "extension",
            "config": {"name": job.name, "process": [process]},
            "meta": {"name": job.name, "version": "1.0", "atelier_run": job.run_id},
        }


def _write_dataset(folder: Path, job: TrainingJob) -> Path:
    """`folder` holding exactly the job's images and their captions (trigger word included)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    for index, image in enumerate(job.images):
        stem = f"{index:04d}"
        target = folder / f"{stem}{image.path.suffix.lower()}"
        wanted.update({target.name, f"{stem}.txt"})
        if not (target.exists() and os.path.samefile(target, image.path)):
            temp = folder / f".{target.name}.tmp"
            temp.unlink(missing_ok=True)
            try:
                os.link(image.path, temp)
            except OSError:
                shutil.copyfile(image.path, temp)
            os.replace(temp, target)
        caption = _with_trigger(image.caption, job.trigger_word)
        caption_path = folder / f"{stem}.txt"
        if not caption_path.exists() or caption_path.read_text(encoding="utf-8") != caption:
            _write_atomic(caption_path, caption)
    for entry in folder.iterdir():
        # ai-toolkit's latent cache is a folder; only our own files from an earlier attempt go.
        if entry.is_file() and entry.name not in wanted:
            entry.unlink()
    return folder


def _with_trigger(caption: str, trigger: str) -> str:
    caption = " ".join(caption.split())
    if re.search(rf"(?<![\w]){re.escape(trigger)}(?![\w])", caption):
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def _discard_broken_saves(save_root: Path, name: str, log: LogCallback) -> None:
    """Delete the saves whose header does not parse (written when the trainer was killed).

    ai-toolkit resumes from its newest `<name>*.safetensors`, whole or not: a broken one would
    make every later attempt fail to load it.
    """
    if not save_root.is_dir():
        return
    for path in save_root.iterdir():
        if path.name.startswith(name) and path.name.endswith(".safetensors"):
            _discard_broken(path, log)


def _discard_broken(path: Path, log: LogCallback) -> None:
    try:
        read_header(path)
    except (OSError, SafetensorsError) as error:
        path.unlink(missing_ok=True)
        log(f"deleted a half-written {path.name} ({error}); training resumes from the last whole save")


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def to_yaml(value: Mapping[str, Any]) -> str:
    """`value` (nested mappings and lists of str, int, float, bool) as block-style YAML."""
    return "\n".join(_yaml_lines(value, 0)) + "\n"


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml_lines(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item)}")
        return lines
    for item in value:
        if _is_block(item):
            nested = _yaml_lines(item, indent + 2)
            lines.append(f"{pad}- {nested[0][indent + 2 :]}")
            lines.extend(nested[1:])
        else:
            lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 needs the dot (and a signed exponent, which repr gives) to read a float.
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    if isinstance(value, Mapping | list | tuple):
        return "{}" if isinstance(value, Mapping) else "[]"
    # JSON's double-quoted strings are YAML double-quoted strings.
    return json.dumps(str(value))
