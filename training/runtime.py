"""Where a run computes: the device, the numeric precision and the process group, in one object.

``Runtime.start(device, precision)`` resolves the request once (``auto``: CUDA when present), joins
the process group when launched by ``torchrun`` (NCCL with each rank on ``cuda:LOCAL_RANK``, gloo on
CPU), and from then on the loop asks it to move batches, wrap the model for DDP, run the model in the
chosen precision and take optimiser steps. On CPU with the defaults each of those is the identity
(the same tensors, the same loader, no autocast, no scaler), so CPU runs compute exactly what they
did before there was a device to choose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device or precision this machine cannot give; the message is one line naming the flag."""


def resolve_device(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> the device to run on, or a :class:`DeviceError`.

    Under torchrun (``local_rank`` given) a CUDA request means ``cuda:LOCAL_RANK``: one GPU per rank.
    Never falls back to the CPU silently: a CUDA request on a machine without one is an error.
    """
    text = (requested or "auto").strip().lower()
    available = torch.cuda.is_available()
    if text == "auto":
        text = "cuda" if available else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise DeviceError(f"--device {requested!r}: choose {DEVICE_CHOICES}")
    if not available:
        raise DeviceError(f"--device {requested}: no CUDA device is visible to this process "
                          "(no NVIDIA GPU or driver, CUDA_VISIBLE_DEVICES hides them, or torch is a CPU build); "
                          "use --device cpu")
    index = int(match.group(1)) if match.group(1) is not None else None
    if local_rank is not None:
        if index is not None and index != local_rank:
            raise DeviceError(f"--device {requested} under torchrun: each rank runs on cuda:LOCAL_RANK; "
                              "pass --device cuda (or auto)")
        index = local_rank
    index = 0 if index is None else index
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {requested}: there is no cuda:{index}; this process sees {count} CUDA "
                          f"device{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> bf16 autocast on a CUDA device that has it, fp16 (with a gradient scaler) on one that
    does not, fp32 on the CPU. An explicit bf16 or fp16 is honoured on the CPU too (autocast there)."""
    if requested not in PRECISIONS:
        raise DeviceError(f"--precision {requested!r}: choose {', '.join(PRECISIONS)}")
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no native bf16; "
                          "use fp16 or auto")
    return requested


def default_workers(device: torch.device, local_world_size: int = 1) -> int:
    """Loader processes per rank: none on the CPU (the training threads already use the cores, and the
    augmentation stays in the main process's seeded RNG stream), the cores shared among the ranks of
    this machine on CUDA, at most 8."""
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(local_world_size, 1)))


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


class AutocastModel:
    """Calls a model under autocast and hands back float32 outputs, so the losses after it (softmax
    temperatures, NT-Xent logits, margins) are computed in full precision."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    def __getattr__(self, name: str) -> Any:  # anything else an objective asks of the model
        return getattr(self.model, name)


@dataclass
class Runtime:
    """Device, precision and distribution of one training process (rank)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # fp32 | bf16 | fp16 (the last two: autocast; fp16 also scales the loss)
    rank: int = 0
    world_size: int = 1
    workers: int = 0  # DataLoader worker processes
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @classmethod
    def start(cls, device: str = "auto", precision: str = "auto", workers: int | None = None,
              channels_last: bool = False) -> Runtime:
        """Resolve the request and, when launched by torchrun (WORLD_SIZE > 1), join the process group."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world_size > 1 else None
        resolved = resolve_device(device, local_rank)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
            # The input size never changes within a run: let cuDNN time its kernels once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        chosen = resolve_precision(precision, resolved)
        if workers is None:
            workers = default_workers(resolved, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        if workers < 0:
            raise DeviceError(f"--workers {workers}: must be 0 or more")
        rank = 0
        if world_size > 1:
            if not dist.is_initialized():
                if resolved.type == "cuda":
                    dist.init_process_group("nccl", device_id=resolved)
                else:
                    dist.init_process_group("gloo")
            rank, world_size = dist.get_rank(), dist.get_world_size()
        scaler = torch.amp.GradScaler(resolved.type) if chosen == "fp16" else None
        return cls(resolved, chosen, rank, world_size, workers, channels_last, scaler)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about where it was trained."""
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {"device": str(self.device), "gpu": gpu, "precision": self.precision, "world_size": self.world_size,
                "workers": self.workers, "channels_last": self.channels_last}

    # placement ---------------------------------------------------------------------------------
    def place(self, module: nn.Module) -> nn.Module:
        """Move a module (its parameters and buffers) to the device, in place; returns it."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``module`` when there is more than one rank; else ``module``."""
        if self.world_size == 1:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def forward_model(self, model: nn.Module) -> nn.Module | AutocastModel:
        """The model as the objective should call it: itself in fp32, under autocast otherwise."""
        dtype = self.autocast_dtype
        return model if dtype is None else AutocastModel(model, self.device.type, dtype)

    # data ---------------------------------------------------------------------------------------
    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def loader(self, loader: DataLoader) -> DataLoader:
        """``loader`` with this runtime's workers and pinned memory (the same order, the same batches);
        ``loader`` itself when it needs neither (the CPU default)."""
        if self.workers == 0 and not self.pin_memory:
            return loader
        batching: dict[str, Any] = ({"batch_sampler": loader.batch_sampler} if loader.batch_size is None else
                                    {"batch_size": loader.batch_size, "sampler": loader.sampler,
                                     "drop_last": loader.drop_last})
        return DataLoader(loader.dataset, **batching, collate_fn=loader.collate_fn, num_workers=self.workers,
                          pin_memory=self.pin_memory, generator=loader.generator,
                          worker_init_fn=loader.worker_init_fn, prefetch_factor=4 if self.workers else None)

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every tensor of a batch on the device (asynchronous copies from pinned memory on CUDA)."""
        if self.device.type == "cpu":
            return dict(batch)
        return {key: value.to(self.device, non_blocking=self.pin_memory) for key, value in batch.items()}

    # optimisation -------------------------------------------------------------------------------
    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Zero the gradients, back-propagate ``loss`` (scaled under fp16) and step the optimiser;
        False when fp16's scaler skipped the step (the scaled gradients overflowed)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return True
        self.scaler.scale(loss).backward()
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()  # lowers the scale exactly when it skipped the step
        return self.scaler.get_scale() >= scale

    # distribution -------------------------------------------------------------------------------
    def mean(self, value: float) -> float:
        """The mean of a per-rank number over all ranks (the number itself on one process)."""
        if self.world_size == 1:
            return value
        # NCCL reduces only tensors on the GPU; gloo those on the CPU.
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        if self.world_size == 1:
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()
