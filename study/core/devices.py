"""Where training and bulk inference run: ``--device`` resolved once, one GPU per worker, bf16 autocast on CUDA.

Timing never runs here: exported artifacts are timed on the CPU, the serving target the latency objective
describes. Training functions take a device and hand their model back on the CPU in fp32.
"""

from __future__ import annotations

import platform
from contextlib import nullcontext

from study.core.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")  # --device choices; auto: cuda, else mps, else cpu
_ACCELERATORS = {"cuda": "CUDA GPU visible to PyTorch", "mps": "Apple MPS device available to PyTorch"}


def available(kind: str) -> bool:
    """Whether this machine's PyTorch can use device type ``kind`` (cuda respects CUDA_VISIBLE_DEVICES)."""
    import torch

    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return kind == "cpu"


def resolve_device(name: str) -> str:
    """The device type a ``--device`` value means on this machine: ``auto`` becomes cuda if available, else mps
    if available, else cpu; a named accelerator this machine lacks is a UserError (exit 2, nothing written)."""
    if name not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return next(kind for kind in ("cuda", "mps", "cpu") if available(kind))
    if not available(name):
        import torch

        raise UserError(f"--device {name}: this machine has no {_ACCELERATORS[name]} (torch {torch.__version__}"
                        f"{', CUDA_VISIBLE_DEVICES may hide them' if name == 'cuda' else ''}); use --device cpu, "
                        "or --device auto to take an accelerator only when there is one")
    return name


def worker_device(name: str, worker: int = 0) -> str:
    """The device worker ``worker`` (0: the main process) trains on: with cuda, visible GPU ``worker`` mod their
    count (``cuda:0``, ``cuda:1``, ...; torch numbers only the GPUs CUDA_VISIBLE_DEVICES shows); else the type."""
    kind = resolve_device(name)
    if kind != "cuda":
        return kind
    import torch

    return f"cuda:{worker % torch.cuda.device_count()}"


def as_device(device):
    """A ``torch.device`` for ``device`` (a torch.device, a name such as ``cuda:1``, ``auto``, or None: cpu)."""
    import torch

    if device is None:
        return torch.device("cpu")
    return torch.device(worker_device(device) if device == "auto" else device)


def autocast_dtype(device):
    """bf16 on a CUDA device that supports it natively (Ampere and later), else None (fp32)."""
    import torch

    device = as_device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return None


def autocast(device):
    """The forward passes' autocast context on ``device``: bf16 where ``autocast_dtype`` says so, else none."""
    import torch

    dtype = autocast_dtype(device)
    return nullcontext() if dtype is None else torch.autocast(device_type=as_device(device).type, dtype=dtype)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """The GPU's name (e.g. ``NVIDIA H100 80GB HBM3``), ``Apple MPS``, or the CPU's model name."""
    import torch

    device = as_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "Apple MPS" if device.type == "mps" else cpu_model()


def device_facts(device) -> dict[str, str]:
    """What the runs log about where training ran: ``train_device`` (cpu, cuda, mps), ``train_device_name`` and
    ``train_precision`` (fp32, or bf16 autocast)."""
    dtype = autocast_dtype(device)
    return {"train_device": as_device(device).type, "train_device_name": device_name(device),
            "train_precision": "fp32" if dtype is None else "bf16 autocast"}
