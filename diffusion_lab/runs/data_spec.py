"""What a run's images look like, from a live datamodule or a checkpoint's stored config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class

from diffusion_lab.utils.errors import UserFacingError


@dataclass(frozen=True)
class DataSpec:
    """What a run's images look like: channels, size, classes (names where known)."""

    channels: int
    img_size: int
    num_classes: int
    class_names: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.channels, self.img_size, self.img_size

    @classmethod
    def of_datamodule(cls, datamodule: Any) -> DataSpec:
        """The spec of a live ImageDataModule."""
        names = tuple(datamodule.class_names) or None
        return cls(datamodule.channels, datamodule.img_size, datamodule.num_classes, names)

    @classmethod
    def of_run_config(cls, config: dict[str, Any], source: str) -> DataSpec:
        """The spec stored in a run config; `source` names the checkpoint in the error."""
        try:
            data = config["data"]
            keys = ("channels", "img_size", "num_classes")
            channels, size, classes = (int(data[k]) for k in keys)
            # Recorded by train (an image folder's come from its folders); else the data class's.
            names = config.get("class_names")
            if names is None:
                names = getattr(get_class(data["_target_"]), "class_names", ())
            names = tuple(names)
        except (KeyError, TypeError, ImportError, ValueError):
            raise UserFacingError(
                f"ckpt={source}: its stored config lacks data.num_classes/img_size/channels"
            ) from None
        return cls(channels, size, classes, names if len(names) == classes else None)
