"""The run's arithmetic: fp32, fp16 autocast with loss scaling (CUDA), or bf16 autocast."""

from __future__ import annotations

import torch


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
