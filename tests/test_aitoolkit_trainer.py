"""The ai-toolkit adapter against the fake ai-toolkit (tests/fakes/aitoolkit.py) run as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import yaml
from PIL import Image

from core.backends import Progress
from core.errors import BackendError
from core.training import TrainingImage, TrainingJob
from core.training.aitoolkit import AIToolkitTrainer
from core.training.parameters import check_parameters
from core.training.safetensors import SafetensorsError, read_header, write
from core.training.tqdm import TrainerOutput

pytestmark = pytest.mark.anyio

FAKE = Path(__file__).parent / "fakes" / "aitoolkit.py"
NAME = "mara-v1"
TRIGGER = "mara_char"


@pytest.fixture
def aitoolkit_dir(tmp_path: Path) -> Path:
    """A folder where the fake is installed as ai-toolkit's run.py."""
    folder = tmp_path / "ai-toolkit"
    folder.mkdir()
    shutil.copyfile(FAKE, folder / "run.py")
    return folder


def trainer(folder: Path, grace_s: float = 5.0, **knobs: str) -> AIToolkitTrainer:
    return AIToolkitTrainer(
        directory=folder,
        python=sys.executable,
        base_model="black-forest-labs/FLUX.1-dev",
        grace_s=grace_s,
        env={f"FAKE_AITOOLKIT_{key.upper()}": value for key, value in knobs.items()},
    )


def make_job(tmp_path: Path, images: int = 3, **params: object) -> TrainingJob:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    training_images = []
    for index in range(images):
        path = photos / f"photo{index}.png"
        Image.new("RGB", (64, 48), (200, 40 * index, 30)).save(path)
        # The first caption lacks the trigger word: the adapter must add it.
        caption = "a red-haired explorer" if index == 0 else f"{TRIGGER} on a hill, photo {index}"
        training_images.append(TrainingImage(path, caption))
    given = {"steps": 20, "save_every": 10, "saves_to_keep": 2, **params}
    declared = AIToolkitTrainer(directory=None, python="python3", base_model="x").parameters()
    return TrainingJob(
        run_id="run-1",
        attempt=1,
        character_id="char-1",
        name=NAME,
        trigger_word=TRIGGER,
        images=tuple(training_images),
        params=check_parameters(declared, given),
        workdir=tmp_path / "work",
    )


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped, runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] != "Z"


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


async def test_training_reports_progress_and_returns_a_whole_lora(
    aitoolkit_dir: Path, tmp_path: Path
) -> None:
    job = make_job(tmp_path)
    updates: list[Progress] = []
    log: list[str] = []
    result = await trainer(aitoolkit_dir).train(job, updates.append, on_log=log.append)

    steps = [update.step for update in updates]
    assert steps == list(range(0, 21)), "one update per step, none per redraw byte"
    assert all(update.max_steps == 20 for update in updates)
    assert updates[-1].loss is not None and 0 < updates[-1].loss < updates[1].loss
    assert "loss" in updates[-1].message and updates[-1].eta_s == 0
    assert result.path == job.workdir / "output" / NAME / f"{NAME}.safetensors"
    assert result.steps == 20 and result.resumed_from_step == 0
    assert result.base_model == "black-forest-labs/FLUX.1-dev"
    assert json.loads(result.metadata["training_info"])["step"] == 20
    assert set(read_header(result.path)) - {"__metadata__"}
    # A few log lines, not one per update.
    assert 3 <= len(log) <= 20 and any("step 20/20" in line for line in log)
    # Checkpoints every 10 steps (the 20th is the final file), none left running.
    assert sorted(p.name for p in result.path.parent.glob(f"{NAME}_*.safetensors")) == [
        f"{NAME}_000000010.safetensors"
    ]
    assert not (job.workdir / "aitoolkit.pid").exists()


async def test_job_yaml_has_the_keys_ai_toolkit_needs(aitoolkit_dir: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path, learning_rate=1e-5, lora_rank=8, lora_alpha=4, resolution=768, quantize=False)
    await trainer(aitoolkit_dir).train(job, lambda update: None)

    config = yaml.safe_load((job.workdir / "aitoolkit.yaml").read_text())
    assert config["job"] == "extension" and config["config"]["name"] == NAME
    process = config["config"]["process"][0]
    assert process["type"] == "sd_trainer" and process["trigger_word"] == TRIGGER
    assert process["training_folder"] == str(job.workdir / "output")
    assert process["network"] == {"type": "lora", "linear": 8, "linear_alpha": 4}
    assert process["save"]["save_every"] == 10 and process["save"]["max_step_saves_to_keep"] == 2
    dataset = process["datasets"][0]
    assert dataset["caption_ext"] == "txt" and dataset["resolution"] == [512, 768]
    train = process["train"]
    # PyYAML reads "1e-05" as a string; the adapter must write a float it reads as one.
    assert train["lr"] == 1e-5 and isinstance(train["lr"], float)
    assert (train["steps"], train["batch_size"]) == (20, 1)
    assert (train["optimizer"], train["noise_scheduler"], train["dtype"]) == (
        "adamw8bit",
        "flowmatch",
        "bf16",
    )
    assert process["model"] == {
        "name_or_path": "black-forest-labs/FLUX.1-dev",
        "is_flux": True,
        "quantize": False,
    }
    # The dataset: each image with a caption carrying the trigger word.
    folder = Path(dataset["folder_path"])
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{i:04d}.{ext}" for i in range(3) for ext in ("png", "txt")
    ]
    assert (folder / "0000.txt").read_text() == f"{TRIGGER}, a red-haired explorer"
    assert all(TRIGGER in (folder / f"{i:04d}.txt").read_text() for i in range(3))


@pytest.mark.parametrize("child", ["1", "stubborn"])
async def test_cancel_leaves_no_process_of_the_group_alive(
    aitoolkit_dir: Path, tmp_path: Path, child: str
) -> None:
    # A child in the trainer's group outlives a kill of the trainer's pid alone; a "stubborn" one
    # ignores SIGTERM, as a stuck data loader worker would, so SIGKILL must follow the grace.
    job = make_job(tmp_path)
    started = anyio.Event()
    child_pid_file = job.workdir / "output" / "child.pid"

    def on_progress(update: Progress) -> None:
        started.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(
                trainer(aitoolkit_dir, grace_s=0.5, hang="1", child=child).train, job, on_progress
            )
            with anyio.fail_after(20):
                await started.wait()
            await wait_for(child_pid_file.exists)
            leader = json.loads((job.workdir / "aitoolkit.pid").read_text())["pgid"]
            await wait_for(lambda: child_pid_file.read_text().strip() != "")
            child = int(child_pid_file.read_text())
            assert running(leader) and running(child)
            scope.cancel()
    assert scope.cancelled_caught
    assert not running(leader), "the trainer still runs after cancel"
    assert not running(child), "the trainer's child still runs after cancel"
    assert not (job.workdir / "aitoolkit.pid").exists()


async def test_out_of_memory_is_named_and_not_retryable(aitoolkit_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError) as raised:
        await trainer(aitoolkit_dir, fail="oom").train(make_job(tmp_path), lambda update: None)
    assert "the GPU ran out of memory; lower resolution or batch_size, or enable quantize" in str(
        raised.value
    )
    assert "CUDA out of memory" in str(raised.value)
    assert raised.value.retryable is False


async def test_a_failed_run_puts_the_log_tail_in_the_error(aitoolkit_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError) as raised:
        await trainer(aitoolkit_dir).train(make_job(tmp_path, images=0), lambda update: None)
    message = str(raised.value)
    assert "exited with code 1" in message
    assert "no images found in" in message


async def test_a_trainer_dying_midway_resumes_from_its_last_checkpoint(
    aitoolkit_dir: Path, tmp_path: Path
) -> None:
    job = make_job(tmp_path, steps=30)
    with pytest.raises(BackendError) as raised:
        await trainer(aitoolkit_dir, die_at="25").train(job, lambda update: None)
    assert "killed by SIGKILL" in str(raised.value) and raised.value.retryable
    assert "25/30" in str(raised.value), "the tail holds the bar's last state"

    updates: list[Progress] = []
    result = await trainer(aitoolkit_dir).train(job, updates.append)
    assert result.resumed_from_step == 20
    assert (job.workdir / "output" / "resumed_from.txt").read_text() == "20\n"
    assert [update.step for update in updates] == list(range(20, 31)), "progress starts from the checkpoint"
    assert read_header(result.path)["__metadata__"]["training_info"] == '{"step": 30, "epoch": 0}'


async def test_a_checkpoint_cut_short_is_not_resumed_from(aitoolkit_dir: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path, steps=30)
    with pytest.raises(BackendError):
        await trainer(aitoolkit_dir, die_at="25").train(job, lambda update: None)
    # The trainer was killed while writing its newest checkpoint.
    newest = job.workdir / "output" / NAME / f"{NAME}_000000020.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])

    log: list[str] = []
    result = await trainer(aitoolkit_dir).train(job, lambda update: None, on_log=log.append)
    assert result.resumed_from_step == 10
    assert any(f"deleted a half-written {newest.name}" in line for line in log)


async def test_a_half_written_lora_is_never_returned(aitoolkit_dir: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    final = job.workdir / "output" / NAME / f"{NAME}.safetensors"
    with pytest.raises(BackendError) as raised:
        await trainer(aitoolkit_dir, half_final="1").train(job, lambda update: None)
    assert "not a complete LoRA file" in str(raised.value)
    assert not final.exists()

    # The next attempt resumes from the last whole checkpoint, not from the broken file.
    result = await trainer(aitoolkit_dir).train(job, lambda update: None)
    assert result.resumed_from_step == 10
    assert set(read_header(result.path)) - {"__metadata__"}


CRASHING_ATELIER = textwrap.dedent(
    """
    import sys, anyio
    from pathlib import Path
    from core.training import TrainingImage, TrainingJob
    from core.training.aitoolkit import AIToolkitTrainer
    folder, workdir, image = map(Path, sys.argv[1:4])
    trainer = AIToolkitTrainer(
        directory=folder, python=sys.executable, base_model="flux", env={"FAKE_AITOOLKIT_HANG": "1"}
    )
    params = {spec.name: spec.default for spec in trainer.parameters().values()}
    job = TrainingJob("run-1", 1, "char-1", "mara-v1", "mara_char", (TrainingImage(image, "mara_char"),),
                      params, workdir)
    anyio.run(trainer.train, job, print)
    """
)


async def test_a_trainer_left_by_a_crashed_atelier_is_stopped_first(
    aitoolkit_dir: Path, tmp_path: Path
) -> None:
    job = make_job(tmp_path)
    script = tmp_path / "atelier.py"
    script.write_text(CRASHING_ATELIER)
    atelier = subprocess.Popen(
        [sys.executable, str(script), str(aitoolkit_dir), str(job.workdir), str(job.images[0].path)]
    )
    pid_file = job.workdir / "aitoolkit.pid"
    try:
        await wait_for(pid_file.exists)
        left = json.loads(pid_file.read_text())["pgid"]
        os.kill(atelier.pid, signal.SIGKILL)  # Atelier dies; its trainer keeps running
        atelier.wait()
        assert running(left)

        log: list[str] = []
        result = await trainer(aitoolkit_dir).train(job, lambda update: None, on_log=log.append)
        assert not running(left)
        assert f"stopped ai-toolkit (process group {left}) left running by an earlier attempt" in log[0]
        assert log.index(next(line for line in log if line.startswith("ai-toolkit started"))) > 0
        assert set(read_header(result.path)) - {"__metadata__"}
    finally:
        if atelier.poll() is None:
            atelier.kill()
            atelier.wait()


async def test_a_pid_file_naming_an_unrelated_process_is_not_acted_on(
    aitoolkit_dir: Path, tmp_path: Path
) -> None:
    job = make_job(tmp_path)
    job.workdir.mkdir(parents=True)
    # Another program now has the recorded pid (pid reuse): a different start time.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        (job.workdir / "aitoolkit.pid").write_text(json.dumps({"pgid": other.pid, "start": 1}))
        await trainer(aitoolkit_dir).train(job, lambda update: None)
        assert running(other.pid)
    finally:
        other.kill()
        other.wait()


async def test_health_says_what_is_missing(aitoolkit_dir: Path, tmp_path: Path) -> None:
    assert (await trainer(aitoolkit_dir).health())["ok"] is True
    unset = await AIToolkitTrainer(directory=None, python=sys.executable, base_model="x").health()
    assert unset["ok"] is False and "ATELIER_AITOOLKIT_DIR" in unset["reason"]
    empty = await AIToolkitTrainer(directory=tmp_path, python=sys.executable, base_model="x").health()
    assert empty["ok"] is False and "run.py" in empty["reason"]
    no_python = await AIToolkitTrainer(
        directory=aitoolkit_dir, python="/nonexistent/python", base_model="x"
    ).health()
    assert no_python["ok"] is False and "ATELIER_AITOOLKIT_PYTHON" in no_python["reason"]
    # ai-toolkit's own venv, given relative to its checkout.
    (aitoolkit_dir / "venv" / "bin").mkdir(parents=True)
    (aitoolkit_dir / "venv" / "bin" / "python").symlink_to(sys.executable)
    own_venv = AIToolkitTrainer(directory=aitoolkit_dir, python="venv/bin/python", base_model="x")
    assert (await own_venv.health())["ok"] is True
    assert (await own_venv.train(make_job(tmp_path), lambda update: None)).path.exists()
    with pytest.raises(BackendError) as raised:
        await AIToolkitTrainer(directory=tmp_path, python=sys.executable, base_model="x").train(
            make_job(tmp_path), lambda update: None
        )
    assert raised.value.retryable is False


def test_the_fake_refuses_a_config_ai_toolkit_would_misread(aitoolkit_dir: Path, tmp_path: Path) -> None:
    # What keeps the YAML test honest: ai-toolkit would take "1e-05" as a string; the fake refuses it.
    job = make_job(tmp_path)
    anyio.run(trainer(aitoolkit_dir).train, job, lambda update: None)
    config = yaml.safe_load((job.workdir / "aitoolkit.yaml").read_text())
    config["config"]["process"][0]["train"]["lr"] = "1e-05"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    ran = subprocess.run(
        [sys.executable, "run.py", str(bad)], cwd=aitoolkit_dir, capture_output=True, text=True
    )
    assert ran.returncode == 1
    assert "config.process[0].train.lr must be int or float, got '1e-05'" in ran.stderr


def test_progress_parsing_is_the_same_whatever_the_chunking() -> None:
    stream = (
        "Running 1 job\n"
        "mara-v1:   0%|          | 0/100 [00:00<?, ?it/s]"
        "\rmara-v1:   1%|1         | 1/100 [00:02<03:18,  2.00s/it, lr: 1.0e-04 loss: 4.231e-01]"
        "\rmara-v1:   1%|1         | 1/100 [00:02<03:18,  2.00s/it, lr: 1.0e-04 loss: 4.231e-01]"
        "\rmara-v1:  26%|██▌       | 26/100 [00:01<1:00:03, 19.74it/s, lr: 1.0e-04 loss: 1.467e-01]\n"
        "Saving at step 26\n"
    ).encode()
    whole = TrainerOutput()
    expected = whole.feed(stream) + whole.finish()
    bytewise = TrainerOutput()
    got = [update for index in range(len(stream)) for update in bytewise.feed(stream[index : index + 1])]
    assert got == expected
    assert [(u.step, u.max_steps, u.loss, u.eta_s) for u in got] == [
        (0, 100, None, None),
        (1, 100, 0.4231, 198.0),
        (26, 100, 0.1467, 3603.0),
    ]
    assert whole.tail()[-2:] == [
        "mara-v1:  26%|██▌       | 26/100 [00:01<1:00:03, 19.74it/s, lr: 1.0e-04 loss: 1.467e-01]",
        "Saving at step 26",
    ]


def test_safetensors_round_trip_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    write(path, {"a": ("F32", (2, 3), bytes(24)), "b": ("F16", (4,), bytes(8))}, {"step": "7"})
    header = read_header(path)
    assert {
        name: (e["dtype"], tuple(e["shape"])) for name, e in header.items() if name != "__metadata__"
    } == {
        "a": ("F32", (2, 3)),
        "b": ("F16", (4,)),
    }
    assert header["__metadata__"] == {"step": "7"}
    data = path.read_bytes()
    for cut in (4, 20, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(SafetensorsError):
            read_header(path)
