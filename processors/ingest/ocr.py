"""OCR of scanned pages: the page's embedded images (pypdf) read by the Tesseract binary.

No Python OCR package: `tesseract` (Debian: apt-get install tesseract-ocr) is called as a subprocess,
one image at a time, each call bounded by what is left of the document's time budget. A page drawn
with vector paths instead of an embedded image has nothing to read here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pypdf import PageObject

from schemas.config import PdfOptions


class OcrUnavailable(Exception):
    """The configured tesseract binary is not installed."""


class OcrTimeout(Exception):
    pass


@dataclass
class OcrResult:
    pages: list[str]  # text per page, for the pages read
    n_images: int = 0
    problems: list[str] = field(default_factory=list)  # images that could not be decoded or read


def tesseract_path(options: PdfOptions) -> str:
    path = shutil.which(options.tesseract)
    if path is None:
        raise OcrUnavailable(f"OCR is on but the tesseract binary {options.tesseract!r} is not installed "
                             "(Debian/Ubuntu: apt-get install tesseract-ocr)")
    return path


def ocr_pages(pages: list[PageObject], options: PdfOptions, deadline: float) -> OcrResult:
    """Text of each page's images, in page order. Raises OcrUnavailable / OcrTimeout only."""
    binary = tesseract_path(options)
    result = OcrResult(pages=[])
    with tempfile.TemporaryDirectory(prefix="sluicegate-ocr-") as tmp:
        for number, page in enumerate(pages, start=1):
            texts = []
            try:
                images = list(page.images)
            except Exception as e:  # noqa: BLE001 - a damaged image list is a problem of this page only
                result.problems.append(f"page {number}: images unreadable ({type(e).__name__})")
                images = []
            for i, image_file in enumerate(images):
                path = Path(tmp) / f"p{number}-{i}.png"
                try:
                    image = image_file.image
                    if image.mode not in ("1", "L", "RGB"):
                        image = image.convert("RGB")
                    image.save(path)
                except Exception as e:  # noqa: BLE001 - undecodable image data (or a pixel bomb PIL refuses)
                    result.problems.append(f"page {number} image {i}: {type(e).__name__}")
                    continue
                result.n_images += 1
                texts.append(_tesseract(binary, path, options.ocr_languages, deadline))
                path.unlink(missing_ok=True)
            result.pages.append("\n".join(t for t in texts if t.strip()))
    return result


def _tesseract(binary: str, image: Path, languages: str, deadline: float) -> str:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise OcrTimeout("no time left for OCR")
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # one core: the model workers need the others
    try:
        done = subprocess.run([binary, str(image), "stdout", "-l", languages], capture_output=True,
                              timeout=remaining, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise OcrTimeout("OCR of one image took longer than the time left") from None
    if done.returncode != 0:
        # e.g. a language pack that is not installed: say so instead of returning no text
        raise OcrUnavailable(f"tesseract failed (exit {done.returncode}): "
                             f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout.decode("utf-8", errors="replace")
