"""Augmentation for dermoscopy, on uint8 tensors.

Lesions have no canonical orientation, so any rotation and both flips are fair; random
resized crops mimic framing and zoom; colour jitter mimics dermoscopes and lighting.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2


def train_transform(input_size: tuple[int, int], strength: str = "default") -> v2.Compose:
    scale = (0.5, 1.0) if strength == "default" else (0.8, 1.0)
    h, w = input_size
    return v2.Compose([
        v2.RandomResizedCrop((h, w), scale=scale, ratio=(0.75 * w / h, 1.33 * w / h), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(180),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03),
    ])


def normalize_batch(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 NCHW -> float, the torch twin of PreprocessSpec.normalize (same constants)."""
    mean = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.float() * (1 / 255) - mean) / std
