"""The one training augmentation, on batches of tensors (CPU or GPU), for ``train`` and the GPU recipe.

Training images arrive as *stored squares*: ``square_pixels`` turns each image upright, resizes
its shorter side to the input spec's ``resize`` and keeps the central ``resize``×``resize`` square,
as ``uint8`` (3×S×S). From that square:

- ``centre_crop`` is the evaluation transform (the box's ``resize_shorter_center_crop``: the
  central ``size`` crop, normalised);
- ``augment`` draws, per image, a random resized crop (35-100 % of the area, aspect 3/4-4/3), flips,
  a rotation (free for microscope images, which have no up or down; ±10° for colposcope photos,
  which keep gravity) and brightness, contrast, saturation and hue jitter (stain and white balance
  differ between labs and cameras), all in one ``grid_sample``.

Only torch is needed (the GPU machine has no other library of the appliance's).
"""
from __future__ import annotations

import math

import numpy as np


def square_pixels(image, side: int) -> np.ndarray:
    """A PIL image → its upright, shorter-side-``side`` central square, ``uint8`` 3×side×side."""
    from torchvision import transforms as T

    from .transforms import upright_rgb
    geometry = T.Compose([T.Resize(side, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                          T.CenterCrop(side)])
    return np.ascontiguousarray(np.asarray(geometry(upright_rgb(image)), np.uint8).transpose(2, 0, 1))


def normalise(x, spec):
    import torch
    mean = torch.tensor(spec["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def centre_crop(pixels, spec):
    """The evaluation transform on stored squares: the central ``size`` crop, normalised."""
    size = int(spec["size"])
    offset = int(round((pixels.shape[-1] - size) / 2))
    return normalise(pixels[..., offset:offset + size, offset:offset + size].float() / 255, spec)


def augment(pixels, spec, microscopy: bool, generator):
    """Stored squares (N×3×S×S ``uint8``) → augmented, normalised N×3×size×size float crops: one
    draw per image (see the module docstring). ``generator`` lives on the pixels' device."""
    import torch
    import torch.nn.functional as F

    n, dev = len(pixels), pixels.device

    def uniform(low, high):
        return torch.rand(n, device=dev, generator=generator) * (high - low) + low
    area = uniform(0.35, 1.0)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
    cx, cy = uniform(-1, 1) * (1 - w), uniform(-1, 1) * (1 - h)
    angle = uniform(0, 2 * math.pi) if microscopy else uniform(-math.pi / 18, math.pi / 18)
    flip_x = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0) if microscopy \
        else torch.ones(n, device=dev)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([w * cos * flip_x, -h * sin * flip_y, cx], 1),
                         torch.stack([w * sin * flip_x, h * cos * flip_y, cy], 1)], 1)
    size = int(spec["size"])
    grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
    x = F.grid_sample(pixels.float() / 255, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = x * uniform(0.75, 1.25).view(n, 1, 1, 1)                                   # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(0.75, 1.25).view(n, 1, 1, 1) + mean                    # contrast
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * uniform(0.7, 1.3).view(n, 1, 1, 1)                      # saturation
    x = _rotate_hue(x, uniform(-0.06, 0.06) * 2 * math.pi)                          # stain / white balance
    return normalise(x.clamp(0, 1), spec)


def _rotate_hue(x, angle):
    """Rotate the chroma of RGB images in YIQ space by ``angle`` (radians, one per image)."""
    import torch
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1] * cos - yiq[:, 2] * sin, yiq[:, 1] * sin + yiq[:, 2] * cos
    yiq = torch.stack([yiq[:, 0], i, q], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq)
