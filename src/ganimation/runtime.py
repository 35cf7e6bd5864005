"""Settings of the process that trains or animates, for the device it runs on.

The CLI applies :data:`PROCESS_ENVIRONMENT` before anything loads torch; ``ganimation train``
calls :func:`prepare_runtime` once before building the trainer, as does the trainer's side of
``benchmarks/speed.py``. Nothing here changes the arithmetic of a float32 step on the CPU; on
CUDA, TF32 does (by design: it is what makes float32 convolutions fast there).

This module imports torch only inside its functions, so that the CLI can import it first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ganimation.config import Config

logger = logging.getLogger(__name__)

#: Environment defaults for a ganimation process, read by OpenMP when torch loads (a value the
#: user set wins). By default an OpenMP thread that waits for work spins for a while; on a
#: machine whose cores other processes share, the spinning thread holds the core its partner
#: needs to finish, and every parallel region waits for the scheduler: the paper128 training
#: iteration took 44-65 s with spinning threads against 21 s with sleeping ones on 2 shared
#: cores, and a 32 px generator pass 600 ms against 2.5 ms. On an idle machine it costs a wake-up
#: per parallel region, microseconds against milliseconds of work.
PROCESS_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_process_environment() -> None:
    """Set :data:`PROCESS_ENVIRONMENT` where the user has not (before torch is imported)."""
    for key, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a training step frees, for the next step to reuse.

    By default glibc hands every block over 32 MB straight back to the kernel when it is freed
    (mmap / munmap), so a tensor that large allocated afresh each step is page-faulted in and zeroed
    by the kernel each time: the critic's deepest weight gradient alone is 134 MB, and a paper128
    critic step at batch 4 spent over a quarter of its time in such faults (2.73 s a step with
    this, 3.76 s without). With mmap off and the heap never trimmed, freed blocks stay in the
    process, which keeps its peak memory. Returns whether it applied (glibc on Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def prepare_runtime(config: Config, device: torch.device) -> None:
    """Process-wide settings for training ``config`` on ``device``."""
    import torch

    if device.type == "cpu" and keep_freed_memory():
        logger.debug("glibc malloc keeps freed memory for reuse")
    if device.type == "cuda" and not config.run.deterministic:
        # TF32 tensor cores for float32 products and convolutions (10 mantissa bits in the
        # products, float32 sums), and cuDNN's fastest algorithm for each shape, found once.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def bf16_unsupported(device: torch.device) -> str | None:
    """Why bfloat16 autocast would be slower than float32 on ``device``; None where it has
    native bfloat16 arithmetic (a CUDA GPU from Ampere on; a CPU with AVX512-BF16 or AMX)."""
    import torch

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"{torch.cuda.get_device_name(device)} has no native bfloat16 arithmetic"
    if device.type == "cpu":
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
        return ("this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so it would be emulated: "
                "a paper128 generator pass took 30.5 s against 0.30 s in float32")
    return f"bfloat16 autocast is not supported on {device.type}"


def use_bf16(requested: bool, device: torch.device, setting: str = "run.bf16") -> bool:
    """A request for bfloat16 (``setting``, for the message) as it can be honoured on ``device``:
    refused, with a warning that says why, where bfloat16 would be slower than float32."""
    if not requested:
        return False
    reason = bf16_unsupported(device)
    if reason is None:
        return True
    logger.warning("%s ignored, computing in float32: %s", setting, reason)
    return False
