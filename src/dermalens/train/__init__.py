"""Training (needs the `train` extra: torch, torchvision, timm and the weight packages)."""
