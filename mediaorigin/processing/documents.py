"""PDF documents: page count and a first-page thumbnail, rendered with pypdfium2 (PDFium).

PDFium is not thread-safe: one document at a time per process (workers run one stage each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium

from .errors import ProcessingError

JPEG_QUALITY = 85


@dataclass(frozen=True)
class DocumentInfo:
    pages: int
    thumbnail: Path
    width: int  # thumbnail pixels
    height: int


def document_info(src: Path, thumb_path: Path, size: tuple[int, int] = (640, 640)) -> DocumentInfo:
    """Count pages and render page 1 fitted within `size` (vector, so scaling up is fine).
    Password-protected and unreadable PDFs raise ProcessingError("corrupt")."""
    thumb_path = Path(thumb_path)
    thumb_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        doc = pdfium.PdfDocument(str(src))
    except pdfium.PdfiumError as e:
        raise ProcessingError("corrupt", f"unreadable or encrypted PDF: {e}") from None
    try:
        pages = len(doc)
        if pages == 0:
            raise ProcessingError("corrupt", "the PDF has no pages")
        page = doc[0]
        try:
            w, h = page.get_size()  # points, rotation applied
            if w <= 0 or h <= 0:
                raise ProcessingError("corrupt", "the first page has no area")
            scale = min(size[0] / w, size[1] / h)
            bitmap = page.render(scale=scale)
            image = bitmap.to_pil().convert("RGB")
            bitmap.close()
        except pdfium.PdfiumError as e:
            raise ProcessingError("corrupt", f"first page does not render: {e}") from None
        finally:
            page.close()
    finally:
        doc.close()
    image.thumbnail(size)  # rounding in the renderer may overshoot by a pixel
    image.save(thumb_path, "JPEG", quality=JPEG_QUALITY)
    return DocumentInfo(pages, thumb_path, image.width, image.height)
