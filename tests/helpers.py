"""Small helpers several test modules share."""

from __future__ import annotations

import pytest
import torch

from mnist_classifier.errors import ImageError


def one_line_image_error(read, source, **kw) -> str:
    """The ImageError message ``read(source)`` raises, checked to be one line."""
    with pytest.raises(ImageError) as info:
        read(source, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def perturb_batch_norm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The model in eval mode with batch-norm statistics and affine terms far from (0, 1), so that folding
    them into the layers before them is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()
