"""Training on a chosen device: the request is resolved once (never a quiet CPU run on a CUDA request),
the device reaches the model, the objective's parameters and every batch, mixed precision runs
through the same loop, and checkpoints written before any of this still load and export.

On a machine without CUDA the device is the CPU, through the same code a GPU run takes; on a machine
with one, the ``cuda`` cases run too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import refused_by_training_cli
from training import trainer
from training.checkpoint import Checkpoint, CheckpointError
from training.config import TrainConfig, load_config
from training.runtime import DeviceError, Runtime, default_workers, resolve_device, resolve_precision

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

LEGACY = Path(__file__).parent / "data" / "checkpoint-b9b078c.pt"  # written by the trainer of commit b9b078c
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here"))]
TINY = ["data.train_limit=1000", "data.val_size=200", "data.test_limit=300", "optim.epochs=1", "optim.max_steps=3",
        "optim.batch_size=32", "optim.m_per_class=4", "model.widths=[8, 16]", "model.depth=1",
        "eval.val_near_duplicates=20", "optim.threads=2"]
# Proxies (normalised softmax) and the instance term's second view.
CLASS_RUN = [*TINY, 'objective.name="normalized-softmax"', "objective.scale=20", "objective.instance_weight=1.0"]
# Learned CSN masks, class and per-aspect proxies, triplet batches and the anchors' edited views.
CSN_RUN = [*TINY, "data.train_triplets=96", "data.eval_triplets=60", 'model.masks="learned"', "objective.overall_weight=0.5",
           'objective.overall_loss="normalized-softmax"', "objective.aspect_weight=1.0", "objective.instance_weight=0.5"]


def fake_cuda(monkeypatch, devices: int = 2, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")


def test_auto_is_cuda_when_present_and_the_cpu_otherwise(monkeypatch):
    if not HAS_CUDA:
        assert resolve_device("auto") == torch.device("cpu")
    fake_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    # Under torchrun each rank takes the GPU of its local rank.
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)


def test_a_device_that_is_not_there_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"^--device cuda: no CUDA device is visible") as error:
        resolve_device("cuda")
    assert "\n" not in str(error.value)
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceError, match="choose auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    fake_cuda(monkeypatch, devices=2)
    with pytest.raises(DeviceError, match=r"there is no cuda:2; this process sees 2 CUDA devices \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(DeviceError, match="each rank runs on cuda:LOCAL_RANK"):
        resolve_device("cuda:0", local_rank=1)


def test_precision_is_mixed_on_a_gpu_and_full_on_the_cpu_unless_asked(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(DeviceError, match="choose auto, fp32, bf16, fp16"):
        resolve_precision("fp8", cpu)
    fake_cuda(monkeypatch, bf16=True)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    fake_cuda(monkeypatch, bf16=False)  # e.g. a T4 or V100
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp16"
    with pytest.raises(DeviceError, match="Test GPU has no native bf16"):
        resolve_precision("bf16", torch.device("cuda", 0))


def test_loader_workers_are_none_on_the_cpu_and_sized_to_the_cores_on_a_gpu():
    assert default_workers(torch.device("cpu")) == 0
    assert 1 <= default_workers(torch.device("cuda", 0)) <= 8
    assert default_workers(torch.device("cuda", 0), local_world_size=10_000) == 1


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 50

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": torch.full((2, 2, 1), index, dtype=torch.uint8), "labels": torch.tensor(index % 3)}


def test_a_loader_with_workers_yields_the_same_batches_in_the_same_order():
    sampler = torch.utils.data.RandomSampler(_Items(), generator=torch.Generator().manual_seed(4))
    plain = DataLoader(_Items(), batch_size=8, sampler=sampler, drop_last=True, num_workers=0)
    assert Runtime().loader(plain) is plain  # the CPU default: the loader itself, untouched
    with_workers = Runtime(workers=2).loader(plain)
    assert with_workers.num_workers == 2 and with_workers.drop_last
    expected = [batch["labels"].tolist() for batch in plain]
    sampler.generator.manual_seed(4)
    assert [batch["labels"].tolist() for batch in with_workers] == expected
    assert len(expected) == 6


def _record_devices(monkeypatch) -> tuple[list[dict], list[int]]:
    """Spy on every training step: where its batch, model and objective were, and how many batches
    went through ``Runtime.to_device``."""
    seen: list[dict] = []
    moved: list[int] = []
    forward, to_device = trainer.TrainingStep.forward, Runtime.to_device

    def recording_forward(self, batch):
        seen.append({
            "batch": {key: value.device for key, value in batch.items()},
            "model": {t.device for t in [*self.model.parameters(), *self.model.buffers()]},
            "objective": {t.device for t in [*self.objective.parameters(), *self.objective.buffers()]},
            "objective_parameters": sum(p.numel() for p in self.objective.parameters()),
        })
        return forward(self, batch)

    def recording_to_device(self, batch):
        moved.append(len(batch))
        return to_device(self, batch)

    monkeypatch.setattr(trainer.TrainingStep, "forward", recording_forward)
    monkeypatch.setattr(Runtime, "to_device", recording_to_device)
    return seen, moved


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", ["default", "csn"])
def test_the_device_reaches_the_model_the_objective_and_every_batch(recipe, device, monkeypatch, tmp_path):
    overrides = CLASS_RUN if recipe == "default" else CSN_RUN
    config = load_config(recipe, [*overrides, f'output_dir="{tmp_path}"'])
    seen, moved = _record_devices(monkeypatch)
    runtime = Runtime.start(device)
    trainer.train(config, progress=False, runtime=runtime)

    steps = (tmp_path / "steps.jsonl").read_text().splitlines()
    assert len(seen) == len(moved) == len(steps) == 3
    keys = {"default": {"images", "images_view", "labels"},
            # csn.toml gives every triplet member an edited view (objective.instance_views = "all"),
            # and brings an untinted image and its view to the instance term (objective.instance_plain).
            "csn": {"images_anchor", "images_close", "images_far", "images_anchor_view", "images_close_view",
                    "images_far_view", "images_plain", "images_plain_view", "aspect", "labels",
                    "aspect_labels"}}[recipe]
    for step in seen:
        assert set(step["batch"]) == keys
        assert set(step["batch"].values()) == {runtime.device}
        assert step["model"] == {runtime.device}
        # Proxies (and for CSN, per-aspect proxies) are the objective's own parameters.
        assert step["objective_parameters"] > 0 and step["objective"] == {runtime.device}
    saved = Checkpoint.load(tmp_path / "last.pt")
    assert saved.runtime["device"] == str(runtime.device) and saved.state.step == 3
    # Saved from any device, loaded onto the CPU.
    assert {t.device for t in saved.weights.values()} == {torch.device("cpu")}


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_the_model_in_autocast_and_the_loss_in_float32(precision, dtype, monkeypatch, tmp_path):
    """The CPU path of what a GPU does by default: the model's layers in half precision, the loss
    (and under fp16 the gradient scaler) in float32; the scaler's state is saved for a resume."""
    config = load_config("default", [*CLASS_RUN, f'output_dir="{tmp_path}"'])
    inside: list[torch.dtype] = []
    build = trainer.build_model

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        model.head.register_forward_hook(lambda module, _, out: inside.append(out.dtype) if module.training else None)
        return model

    monkeypatch.setattr(trainer, "build_model", build_and_watch)
    runtime = Runtime.start("cpu", precision)
    trainer.train(config, progress=False, runtime=runtime)
    assert inside and set(inside) == {dtype}
    losses = [float(line.split('"loss": ')[1].rstrip("}")) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and np.isfinite(losses).all()
    saved = Checkpoint.load(tmp_path / "last.pt")
    assert saved.runtime["precision"] == precision
    assert (saved.scaler is not None) == (precision == "fp16")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", [
    ["train", "--config", "default"],
    ["export", "--checkpoint", str(LEGACY), "--output", "never.onnx"],
    ["evaluate", str(LEGACY)],
])
def test_asking_for_cuda_without_one_is_a_one_line_error_and_exit_2(command, tmp_path, monkeypatch, capsys):
    # In this process: the CLI's own code path, without a 7-second start per case. The README's
    # `--device cuda:1` runs as a process of its own (tests/test_documented_commands.py).
    monkeypatch.chdir(tmp_path)
    lines = refused_by_training_cli([*command, "--device", "cuda"], capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"python -m training {command[0]}: error: --device cuda: no CUDA device")
    assert not list(tmp_path.iterdir())  # refused before any work


def test_a_checkpoint_written_before_the_record_loads_and_exports_unchanged(tmp_path):
    """Runs trained before the typed record (a plain dict, these keys) load, rebuild and export."""
    raw = torch.load(LEGACY, map_location="cpu", weights_only=False)
    assert list(raw) == ["config", "command", "input", "classes", "aspects", "mean", "std", "world_size", "model",
                         "objective", "optimizer", "scheduler", "state"]
    saved = Checkpoint.load(LEGACY)
    assert saved.runtime is None and saved.scaler is None and saved.state.epoch == 1 and saved.state.step == 4
    # Written back, it is the same dict: the same keys, the same values.
    again = Checkpoint.from_dict(raw).to_dict()
    assert list(again) == list(raw)
    assert TrainConfig.model_validate(again["config"]) == TrainConfig.model_validate(raw["config"])
    for key in ("command", "input", "classes", "aspects", "mean", "std", "world_size", "state"):
        assert again[key] == raw[key], key
    for key in ("model", "objective", "optimizer", "scheduler"):  # state dicts pass through untouched
        assert again[key] is raw[key], key
    # Code written against the dict still reads it.
    model, checkpoint = trainer.load_trained_model(LEGACY)
    assert checkpoint["state"]["history"] == raw["state"]["history"] and checkpoint.get("nothing", 1) == 1
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    from training.evaluation import torch_embedder

    embedding, _ = torch_embedder(model)(images)
    assert embedding.shape == (5, 64) and np.allclose(np.linalg.norm(embedding, axis=1), 1, atol=1e-5)

    from training.export import export_checkpoint

    result = export_checkpoint(LEGACY, tmp_path / "legacy.onnx", pairs=2000, device="cpu")
    assert result["onnx_max_abs_diff"] < 1e-4
    assert (tmp_path / "legacy.md").is_file()


def test_a_file_that_is_not_a_checkpoint_is_refused_with_its_name(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        Checkpoint.load(junk)
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial.pt: not a likeness checkpoint \(no config, input, mean, std\)"):
        Checkpoint.load(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint.load(tmp_path / "missing.pt")
