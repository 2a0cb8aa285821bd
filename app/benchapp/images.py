"""The user's image: read it, refuse what cannot be used, convert the rest to RGB, and say what was done.

Limits (stated in the page):
- a file larger than ``MAX_FILE_MB`` is refused by the server before it is read (Gradio's ``max_file_size``);
- an image of more than ``MAX_PIXELS`` pixels is refused from its header, before its pixels are decoded;
- an image whose long side exceeds ``MAX_SIDE`` is downscaled to it (the models see far fewer pixels anyway);
- greyscale, palette, 16-bit, CMYK and RGBA images are converted to 8-bit RGB (transparency over white).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from benchapp import InputError

MAX_FILE_MB = 20
MAX_PIXELS = 40_000_000
MAX_SIDE = 1024

NO_IMAGE = "이미지가 없습니다 / No image: upload an image file or pick an example."


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    notes: list[str] = field(default_factory=list)  # what was converted or downscaled, for the page

    @property
    def note(self) -> str:
        return " ".join(self.notes)


def to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB, and a note when the image was something else (transparency is composited over white)."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        converted = Image.alpha_composite(white, rgba).convert("RGB")
        note = f"투명도가 있는 {mode} 이미지를 흰 배경의 RGB로 변환했습니다 / {mode} image with transparency converted to RGB over white."
        return converted, note
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float greyscale: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high == low else (array - low) / (high - low) * 255
        converted = Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")
        note = f"{mode} 흑백 이미지를 8비트 RGB로 변환했습니다 / {mode} greyscale image scaled to 8-bit RGB."
        return converted, note
    kind = "흑백 / greyscale" if mode in ("1", "L") else mode
    note = f"{kind} ({mode}) 이미지를 RGB로 변환했습니다 / {mode} image converted to RGB."
    return image.convert("RGB"), note


def downscale(image: Image.Image, max_side: int = MAX_SIDE) -> tuple[Image.Image, str | None]:
    """At most ``max_side`` pixels on the long side (aspect kept, antialiased), with a note if it shrank."""
    w, h = image.size
    if max(w, h) <= max_side:
        return image, None
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    note = (
        f"큰 이미지({w}×{h})를 {size[0]}×{size[1]}로 줄였습니다 / "
        f"Large image ({w}×{h}) downscaled to {size[0]}×{size[1]} (long side ≤ {max_side} px)."
    )
    return image.resize(size, Image.Resampling.LANCZOS), note


def load_image(path: str | Path | None) -> LoadedImage:
    """Read an uploaded file as RGB uint8 pixels, or raise :class:`InputError` with a message for the page."""
    if path is None or str(path) == "":
        raise InputError(NO_IMAGE)
    path = Path(path)
    name = path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            image = Image.open(path)
            w, h = image.size  # from the header: nothing decoded yet
    except Image.DecompressionBombError:
        raise InputError(
            f"'{name}': 이미지가 너무 큽니다 / image too large: more than {MAX_PIXELS:,} pixels are refused."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(
            f"'{name}': 이미지 파일이 아닙니다 / not an image file (PNG, JPEG, WebP, GIF, BMP or TIFF expected)."
        ) from None
    if w * h > MAX_PIXELS:
        raise InputError(
            f"'{name}': 이미지가 너무 큽니다 / image too large: {w}×{h} = {w * h:,} pixels; "
            f"the limit is {MAX_PIXELS:,} pixels."
        )
    try:
        image = ImageOps.exif_transpose(image)  # decodes the pixels; phone photos come the right way up
        image, converted = to_rgb(image)
        image, shrunk = downscale(image)
        pixels = np.asarray(image, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError):
        raise InputError(
            f"'{name}': 이미지를 읽을 수 없습니다 / the image data is damaged or truncated."
        ) from None
    return LoadedImage(pixels, [n for n in (converted, shrunk) if n])


def check_pixels(pixels: np.ndarray | None) -> np.ndarray:
    """An (H, W, 3) uint8 array as the page holds it; greyscale (H, W) or RGBA arrays are converted."""
    if pixels is None:
        raise InputError(NO_IMAGE)
    array = np.asarray(pixels)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or min(array.shape[:2]) < 1:
        raise InputError(f"이미지 형식 오류 / unexpected image array of shape {array.shape}.")
    if array.shape[-1] == 4:
        array = np.asarray(to_rgb(Image.fromarray(array.astype(np.uint8), "RGBA"))[0])
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255.0


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def square(pixels: np.ndarray, size: int) -> torch.Tensor:
    """The centre square of an image, area-averaged to ``size`` × ``size``: (3, size, size) in [0, 1].

    Area averaging is exact for images that are an integer multiple of ``size`` (e.g. an example shown
    enlarged 8×), and antialiases any other downscale."""
    image = to_tensor(check_pixels(pixels))
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[:, top : top + side, left : left + side]
    mode = "area" if side >= size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image[None], size=(size, size), mode=mode, **kwargs)[0].clamp(0, 1)


def enlarge(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement for display (each pixel becomes a factor × factor block)."""
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
