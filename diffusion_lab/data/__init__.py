"""Datasets as in-memory uint8 tensors and their LightningDataModules."""

from diffusion_lab.data.classification import ClassificationDataModule
from diffusion_lab.data.image_folder import ImageFolderDataModule
from diffusion_lab.data.modules import CIFAR10DataModule, DigitsDataModule, ImageDataModule
from diffusion_lab.data.tensors import InMemoryImages

__all__ = [
    "CIFAR10DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryImages",
]
