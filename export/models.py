"""The networks: torchvision ResNet152 for real packs, a tiny ResNet of the same family for tests.

``FeatureNet`` wraps a torchvision ResNet so that one forward pass returns the logits *and*
the last convolutional feature map (before global pooling): the ONNX graph the appliance
runs has exactly these two outputs, so it can draw a class-activation map without gradients.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet, ResNet152_Weights, resnet152
from torchvision.models.resnet import Bottleneck

from appliance.errors import UserError

from .torchio import load_torch_file

ARCHITECTURES = ("resnet152", "tiny")
TINY_IMAGE_SIZE = 64


class TinyResNet(ResNet):
    """ResNet152's graph family at toy scale, for tests: Bottleneck blocks, one per stage, every
    stage 8× thinner (256 feature channels instead of 2048). Exports, quantizes and runs through
    exactly the same code as ResNet152, in a fraction of a second."""

    WIDTH_DIVISOR = 8

    def __init__(self, num_classes: int):
        super().__init__(Bottleneck, [1, 1, 1, 1], num_classes=num_classes)
        self.fc = nn.Linear(self.inplanes, num_classes)   # inplanes: layer4's output channels

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        # torchvision hard-codes the stage widths (64…512); thin them here.
        return super()._make_layer(block, planes // self.WIDTH_DIVISOR, blocks, stride, dilate)


def build_network(arch: str, num_classes: int, weights: str | Path | None = None) -> ResNet:
    """A torchvision ResNet with a ``num_classes`` head.

    ``weights``: None or "none" (random), "imagenet" (torchvision's ImageNet weights enum; needs
    the download once, or a copy in torch's hub cache), or the path of a saved state dict
    (a backbone, e.g. ImageNet weights copied from another machine; its head is replaced).
    """
    if arch == "tiny":
        return TinyResNet(num_classes)
    if arch != "resnet152":
        raise UserError(f"Unknown architecture {arch!r}.", f"Use one of: {', '.join(ARCHITECTURES)}.")
    source = "none" if weights is None else str(weights)
    if source == "none":
        net = resnet152(weights=None)
    elif source == "imagenet":
        try:
            net = resnet152(weights=ResNet152_Weights.DEFAULT)
        except (OSError, RuntimeError) as exc:   # URLError is an OSError
            raise UserError(f"The ImageNet weights for ResNet152 could not be downloaded ({exc}).",
                            "Connect to the internet once, or copy the weights file and pass "
                            "--weights PATH, or train from scratch with --weights none.") from None
    else:
        net = resnet152(weights=None)
        state = load_state_dict(Path(source))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise UserError(f"The weights in {source} do not fit a ResNet152.",
                            "Pass a torchvision ResNet152 state dict, or --weights imagenet|none.")
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = load_torch_file(path, "weights file", "Pass a .pth file saved with torch.save(model.state_dict(), PATH).")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict.", "Save it with torch.save(model.state_dict(), PATH).")
    return state


class FeatureNet(nn.Module):
    """A ResNet returning ``(logits, features)``; features are the last conv block's output."""

    def __init__(self, net: ResNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        features = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        logits = n.fc(torch.flatten(n.avgpool(features), 1))
        return logits, features


@torch.no_grad()
def set_batchnorm_statistics(net: nn.Module, batches, progress=None) -> None:
    """Recompute every BatchNorm's running mean/variance from ``batches`` (an iterable of tensors).

    Used for untrained networks: with statistics measured on images of the right kind, the
    activations of the evaluation-mode network keep sane ranges, which INT8 calibration needs.
    The cumulative average (momentum None) weighs every batch equally.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for batch in batches:
        net(batch)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    net.eval()
