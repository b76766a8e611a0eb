"""Responsive variants of an uploaded image: a few widths, EXIF orientation applied.

Variants are re-encoded from pixels only, so EXIF (GPS position, camera serials) and any bytes
smuggled in metadata do not reach what we serve. JPEG for opaque images, PNG for images with
transparency (JPEG would flatten it onto black).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ProcessingError

JPEG_QUALITY = 85
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageVariant:
    width: int
    height: int
    path: Path
    size: int  # bytes


def image_variants(
    src: Path,
    out_dir: Path,
    widths: Sequence[int] = (1920, 1280, 640, 320),
    progress: Callable[[float], None] | None = None,
) -> list[ImageVariant]:
    """`image-<width>.jpg|png` for each width not above the source's (as displayed); when the
    source is narrower than every width, one variant at the source size. Largest first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress(0)
    img = _load(Path(src), max(widths, default=0))
    with img:
        targets = sorted({w for w in widths if 0 < w <= img.width}, reverse=True) or [img.width]
        alpha = _has_alpha(img)
        base = img.convert("RGBA" if alpha else "RGB")
        ext, fmt = ("png", "PNG") if alpha else ("jpg", "JPEG")
        variants = []
        for n, width in enumerate(targets, 1):
            height = max(1, round(img.height * width / img.width))
            out = base if width == base.width else base.resize((width, height), Image.LANCZOS)
            path = out_dir / f"image-{width}.{ext}"
            if alpha:
                out.save(path, fmt, optimize=True)
            else:
                out.save(path, fmt, quality=JPEG_QUALITY, optimize=True, progressive=True)
            variants.append(ImageVariant(width, height, path, path.stat().st_size))
            if progress is not None:
                progress(100 * n / len(targets))
    return variants


def _load(src: Path, largest: int) -> Image.Image:
    """Decode once, upright. For a JPEG much wider than the largest variant, let the decoder
    scale by 1/2..1/8 in the DCT (`draft`), which is several times faster than full size."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(src)
            if img.format == "JPEG" and largest > 0:
                orientation = img.getexif().get(0x0112, 1)
                display_w = img.height if orientation in _ROTATED_ORIENTATIONS else img.width
                if display_w > largest:
                    scale = largest / display_w
                    img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img.load()
            upright = ImageOps.exif_transpose(img)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ProcessingError("bad_dimensions", str(e)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ProcessingError("corrupt", f"image does not decode: {e}") from None
    if upright is not img:
        img.close()
    return upright


def _has_alpha(img: Image.Image) -> bool:
    if img.mode in ("RGBA", "LA", "PA"):
        return img.getextrema()[-1][0] < 255  # an all-opaque alpha channel is not transparency
    return img.mode == "P" and "transparency" in img.info
