"""A fake ai-toolkit `run.py`: started as `<python> run.py <config.yaml>` in its folder, like the real one.

Tests copy this file as `run.py` into a temp folder and point the adapter at it. It reads the
job YAML with PyYAML (as ai-toolkit does), refuses a config missing a key ai-toolkit needs or
giving a number as anything but a number (the real one would silently misread it), checks the
dataset folder holds images with caption files carrying the trigger word, then "trains": one
tqdm bar on stderr redrawn with `\\r` exactly as ai-toolkit's is, checkpoints
`<training_folder>/<name>/<name>_<step:09d>.safetensors` every `save_every` steps (pruned to
`max_step_saves_to_keep`), `config.yaml`, and the final `<name>.safetensors` (a real safetensors
file whose metadata holds the step, as ai-toolkit's `training_info`).

Started again with saves in its folder, it resumes from the newest (by ctime, as ai-toolkit
picks it), printing ai-toolkit's three resume lines, and appends the step it resumed from to
`<training_folder>/resumed_from.txt` so tests can check. Each start (the step it starts from, 0
for a fresh one) and each finish is also appended to FAKE_AITOOLKIT_RECORD when set: a file
outside the training folder, which Atelier removes once the LoRA is kept.

Like ai-toolkit it installs no SIGTERM handler (dies with -15) and answers Ctrl-C (SIGINT) with
`Job stopped` and exit 0. Knobs (environment):
- FAKE_AITOOLKIT_STEP_S: seconds per step (default 0).
- FAKE_AITOOLKIT_FAIL=oom: die at step 1 with torch's CUDA out-of-memory traceback.
- FAKE_AITOOLKIT_HANG=1: hang after the first progress redraw.
- FAKE_AITOOLKIT_DIE_AT=N: SIGKILL itself once step N is done (after that step's save).
- FAKE_AITOOLKIT_CHILD=1 (or `stubborn`, which ignores SIGTERM): start a child process in its
  process group, as a data loader worker would be, its pid in `<training_folder>/child.pid`.
- FAKE_AITOOLKIT_HALF_FINAL=1: write only the first half of the final file, then exit 0.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import time

import yaml

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# tqdm's unicode bar: eighths of a block, then the full block.
BAR_CHARS = " " + "".join(map(chr, range(0x258F, 0x2587, -1)))


class ConfigError(Exception):
    pass


def need(mapping: object, key: str, kind: type | tuple[type, ...], where: str) -> object:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(f"{where}.{key} is missing")
    value = mapping[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int to Python; not to a config.
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}.{key} must be {names}, got {value!r}")
    return value


def check_config(config: object) -> dict:
    """The first process of a valid config; ConfigError naming the first problem otherwise."""
    if need(config, "job", str, "config") != "extension":
        raise ConfigError("job must be 'extension'")
    job = need(config, "config", dict, "config")
    need(job, "name", str, "config")
    processes = need(job, "process", list, "config")
    if not processes:
        raise ConfigError("config.process is empty")
    process = processes[0]
    where = "config.process[0]"
    if need(process, "type", str, where) != "sd_trainer":
        raise ConfigError(f"{where}.type must be sd_trainer")
    need(process, "training_folder", str, where)
    need(process, "trigger_word", str, where)
    network = need(process, "network", dict, where)
    if need(network, "type", str, f"{where}.network") != "lora":
        raise ConfigError(f"{where}.network.type must be lora")
    need(network, "linear", int, f"{where}.network")
    need(network, "linear_alpha", (int, float), f"{where}.network")
    save = need(process, "save", dict, where)
    need(save, "dtype", str, f"{where}.save")
    need(save, "save_every", int, f"{where}.save")
    need(save, "max_step_saves_to_keep", int, f"{where}.save")
    datasets = need(process, "datasets", list, where)
    if not datasets:
        raise ConfigError(f"{where}.datasets is empty")
    for index, dataset in enumerate(datasets):
        at = f"{where}.datasets[{index}]"
        need(dataset, "folder_path", str, at)
        need(dataset, "caption_ext", str, at)
        resolution = need(dataset, "resolution", (int, list), at)
        sizes = resolution if isinstance(resolution, list) else [resolution]
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise ConfigError(f"{at}.resolution must be an int or a list of ints, got {resolution!r}")
    train = need(process, "train", dict, where)
    for key in ("batch_size", "steps"):
        need(train, key, int, f"{where}.train")
    need(train, "lr", (int, float), f"{where}.train")
    for key in ("optimizer", "noise_scheduler", "dtype"):
        need(train, key, str, f"{where}.train")
    model = need(process, "model", dict, where)
    need(model, "name_or_path", str, f"{where}.model")
    need(model, "is_flux", bool, f"{where}.model")
    need(model, "quantize", bool, f"{where}.model")
    return process


def check_dataset(folder: str, caption_ext: str, trigger: str) -> int:
    if not os.path.isdir(folder):
        raise ConfigError(f"dataset folder {folder} does not exist")
    images = [name for name in sorted(os.listdir(folder)) if name.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise ConfigError(f"no images found in {folder}")
    for name in images:
        caption_path = os.path.join(folder, os.path.splitext(name)[0] + "." + caption_ext)
        if not os.path.exists(caption_path):
            raise ConfigError(f"{name} has no caption file {os.path.basename(caption_path)}")
        with open(caption_path, encoding="utf-8") as file:
            caption = file.read()
        if trigger not in caption and "[trigger]" not in caption:
            raise ConfigError(f"caption of {name} does not carry the trigger word {trigger!r}: {caption!r}")
    return len(images)


def write_safetensors(path: str, rank: int, metadata: dict, *, half: bool = False) -> None:
    rng = random.Random(rank)
    tensors = {}
    for block in range(2):
        for part, shape in (("lora_A", (rank, 64)), ("lora_B", (64, rank))):
            name = f"transformer.single_transformer_blocks.{block}.attn.to_k.{part}.weight"
            tensors[name] = (
                shape,
                struct.pack(f"<{shape[0] * shape[1]}f", *(rng.random() for _ in range(shape[0] * shape[1]))),
            )
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, (shape, data) in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    blob = struct.pack("<Q", len(encoded)) + encoded + b"".join(data for _, data in tensors.values())
    if half:
        blob = blob[: len(blob) // 2]
    with open(path, "wb") as file:
        file.write(blob)


def read_step(path: str) -> int:
    """The step in a save's metadata (ai-toolkit's `training_info`), as ai-toolkit reads it back."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return int(json.loads(header["__metadata__"]["training_info"])["step"])


def interval(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def bar_line(desc: str, n: int, total: int, elapsed: float, done_here: int, postfix: str) -> str:
    """One tqdm redraw, in tqdm's default format with its unicode bar of width 10."""
    frac = n / total if total else 0
    full, rem = divmod(int(frac * 10 * 8), 8)
    bar = BAR_CHARS[-1] * full + (BAR_CHARS[rem] if full < 10 else "")
    bar = bar.ljust(10)
    rate = done_here / elapsed if elapsed > 0 and done_here else None
    if rate is None:
        rate_text, remaining = "?it/s", "?"
    else:
        rate_text = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
        remaining = interval((total - n) / rate)
    tail = f", {postfix}" if postfix else ""
    return (
        f"{desc}: {frac * 100:3.0f}%|{bar}| {n}/{total} [{interval(elapsed)}<{remaining}, {rate_text}{tail}]"
    )


def oom_exit(step: int) -> None:
    message = (
        "CUDA out of memory. Tried to allocate 58.00 MiB. GPU 0 has a total capacity of 23.55 GiB of "
        "which 40.31 MiB is free. Including non-PyTorch memory, this process has 23.49 GiB memory in "
        "use. Of the allocated memory 22.71 GiB is allocated by PyTorch, and 351.47 MiB is reserved "
        "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation "
        "for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )
    sys.stderr.write("\n")
    print(f"Error running job: {message}", flush=True)
    print("\n========================================\nResult:\n - 0 completed jobs\n - 1 failure\n"
          "========================================", flush=True)  # fmt: skip
    sys.stderr.write(
        "Traceback (most recent call last):\n"
        '  File "/ai-toolkit/run.py", line 120, in <module>\n    main()\n'
        '  File "/ai-toolkit/jobs/process/BaseSDTrainProcess.py", line 2154, in run\n'
        "    loss_dict = self.hook_train_loop(batch_list)\n"
        '  File "/ai-toolkit/extensions_built_in/sd_trainer/SDTrainer.py", line 1823, in hook_train_loop\n'
        "    loss.backward()\n"
        f"torch.OutOfMemoryError: {message}\n"
    )
    sys.stderr.flush()
    sys.exit(1)


def start_child(training_folder: str, stubborn: bool) -> None:
    code = "import signal, time\n"
    if stubborn:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(3600)\n"
    # Popen keeps the child in our process group, as torch's data loader workers are.
    child = subprocess.Popen([sys.executable, "-c", code])
    with open(os.path.join(training_folder, "child.pid"), "w") as file:
        file.write(str(child.pid))


def train(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as file:
        config = yaml.safe_load(file)
    try:
        process = check_config(config)
        name = config["config"]["name"]
        for dataset in process["datasets"]:
            images = check_dataset(dataset["folder_path"], dataset["caption_ext"], process["trigger_word"])
    except ConfigError as error:
        print(f"Error running job: invalid config {config_path}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    train_config, save = process["train"], process["save"]
    total, save_every, keep = train_config["steps"], save["save_every"], save["max_step_saves_to_keep"]
    rank = process["network"]["linear"]
    training_folder = process["training_folder"]
    save_root = os.path.join(training_folder, name)
    os.makedirs(save_root, exist_ok=True)
    print("Running 1 job", flush=True)
    print(f"#############################################\n# Running job: {name}\n"
          "#############################################\n\n\nRunning  1 process", flush=True)  # fmt: skip
    with open(os.path.join(save_root, "config.yaml"), "w", encoding="utf-8") as file:
        yaml.safe_dump(config, file)
    print(f"Loading Flux model\nLoading transformer\nDataset: {images} images", flush=True)

    start = 0
    saves = [p for p in glob.glob(os.path.join(save_root, f"{name}*.safetensors")) if os.path.exists(p)]
    if saves:
        latest = max(saves, key=os.path.getctime)
        print(f"#### IMPORTANT RESUMING FROM {latest} ####", flush=True)
        print(f"Loading from {latest}", flush=True)
        start = read_step(latest)
        print(f"Found step {start} in metadata, starting from there", flush=True)
        with open(os.path.join(training_folder, "resumed_from.txt"), "a") as file:
            file.write(f"{start}\n")

    record("start", start)
    child = os.environ.get("FAKE_AITOOLKIT_CHILD")
    if child:
        start_child(training_folder, stubborn=child == "stubborn")
    step_s = float(os.environ.get("FAKE_AITOOLKIT_STEP_S", "0"))
    die_at = int(os.environ.get("FAKE_AITOOLKIT_DIE_AT", "-1"))
    lr = float(train_config["lr"])
    began = time.monotonic()
    longest = 0

    def redraw(n: int, postfix: str) -> None:
        nonlocal longest
        line = bar_line(name, n, total, time.monotonic() - began, n - start, postfix)
        sys.stderr.write("\r" + line + " " * max(longest - len(line), 0))
        sys.stderr.flush()
        longest = max(longest, len(line))

    def save_file(path: str, step: int, *, half: bool = False) -> None:
        metadata = {"format": "pt", "name": name, "version": "1.0",
                    "training_info": json.dumps({"step": step, "epoch": 0})}  # fmt: skip
        write_safetensors(path, rank, metadata, half=half)

    redraw(start, "")
    if os.environ.get("FAKE_AITOOLKIT_HANG") == "1":
        while True:
            time.sleep(3600)
    for step in range(start, total):
        if os.environ.get("FAKE_AITOOLKIT_FAIL") == "oom":
            oom_exit(step)
        if step_s:
            time.sleep(step_s)
        done = step + 1
        loss = 0.45 * math.exp(-3 * done / total) + 0.05 + 0.01 * math.sin(done)
        redraw(done, f"lr: {lr:.1e} loss: {loss:.3e}")
        if done % save_every == 0 and done < total:
            sys.stderr.write("\n")
            print(f"Saving at step {done}", flush=True)
            save_file(os.path.join(save_root, f"{name}_{done:09d}.safetensors"), done)
            print(f"Saved to {save_root}/{name}_{done:09d}.safetensors", flush=True)
            checkpoints = sorted(glob.glob(os.path.join(save_root, f"{name}_*.safetensors")))
            for old in checkpoints[: max(len(checkpoints) - keep, 0)]:
                os.remove(old)
        if done == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
    sys.stderr.write("\n")
    sys.stderr.flush()
    final = os.path.join(save_root, f"{name}.safetensors")
    save_file(final, total, half=os.environ.get("FAKE_AITOOLKIT_HALF_FINAL") == "1")
    print(f"Saved to {final}", flush=True)
    record("finish", total)
    print("\n========================================\nResult:\n - 1 completed job\n - 0 failures\n"
          "========================================", flush=True)  # fmt: skip


def record(event: str, step: int) -> None:
    """Append `<event> <step> <pid>` to FAKE_AITOOLKIT_RECORD, if set."""
    path = os.environ.get("FAKE_AITOOLKIT_RECORD")
    if path:
        with open(path, "a") as file:
            file.write(f"{event} {step} {os.getpid()}\n")


def main() -> None:
    if len(sys.argv) < 2:
        print("usage: run.py <config file>", file=sys.stderr)
        sys.exit(1)
    try:
        train(sys.argv[1])
    except KeyboardInterrupt:
        print("Job stopped", flush=True)
        sys.exit(0)


if __name__ == "__main__":
    main()
