"""Devices: where a run trains (`device: auto | cpu | cuda`), autocast on that device, and the collective backend.

    device = resolve_device("auto")            # cuda when a GPU is visible, else cpu
    with autocast(device, "bfloat16"):         # bf16 autocast on the model's own device type
        loss = model(...)
    backend = collective_backend(device)       # "nccl" on CUDA, "gloo" on CPU

Every training path takes its device from here; nothing else in a training path names "cpu" or "cuda".
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = the current CUDA device when one is visible, else the CPU; `cuda` without a GPU is an error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda, but no CUDA GPU is visible to this process (CUDA_VISIBLE_DEVICES, Ray num_gpus?)")
        return torch.device("cuda", torch.cuda.current_device())
    if name != "cpu":
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def autocast(device: torch.device, dtype: str, *, enabled: bool = True):
    """Autocast to `dtype` on `device`'s type when `dtype` is bfloat16 (master weights stay as they are);
    float32 is a no-op context."""
    if not enabled or dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=TORCH_DTYPES[dtype])


def collective_backend(device: torch.device) -> str:
    """torch.distributed backend for ranks that train on `device`.

    >>> collective_backend(torch.device("cpu"))
    'gloo'
    """
    return "nccl" if device.type == "cuda" else "gloo"


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's (DTensor's) full value — a collective over its mesh: every rank must call it — and a
    plain tensor as is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
