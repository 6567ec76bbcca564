"""The run's arithmetic: fp32, fp16 autocast with loss scaling (CUDA), or bf16 autocast."""

from __future__ import annotations

import torch

from smallcovid.models.base import SegmentationModel
from smallcovid.models.fuse import uses_channels_last


def channels_last_training(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether ``model`` trains channels-last on ``device``: dense models on CPU do, in fp32 and
    bf16 alike (oneDNN's fast path: 17-27 % less time per fp32 step than NCHW on an AMD EPYC,
    one thread; ``python -m smallcovid bench`` measures it). Mask R-CNN stays NCHW (RoIAlign
    copies channels-last features back), and CUDA keeps NCHW."""
    # The same rule as inference's (smallcovid.models.fuse), so training and the app agree.
    return isinstance(model, SegmentationModel) and uses_channels_last(model, device)


class MixedPrecision:
    """The run's arithmetic: ``precision="auto"`` is fp16 autocast + loss scaling on CUDA
    and plain fp32 on CPU; ``"bf16"`` is bf16 autocast on either (no scaling needed:
    bf16 has fp32's exponent range).

    The scaler is not part of the resume state: it recalibrates within a few steps.
    """

    def __init__(self, device: torch.device, precision: str = "auto") -> None:
        self.device_type = device.type
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        self.enabled = precision == "bf16" or device.type == "cuda"
        use_scaler = self.enabled and self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def autocast(self) -> torch.autocast:
        """Context for the forward pass and loss."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backpropagate the (scaled) scalar ``loss`` and take one optimiser step."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
