"""What every decoder of downstream images agrees on: the decompression-bomb rule and the thread count.

Two decoders read the images strangers upload: the API's upload check (`service.datasets_store`,
torch-free) and the workers' `decode_images`. They must refuse the same files, or an upload the
API accepted whole would lose images at route time, so both take their rules from here, and this
module imports nothing heavier than Pillow.

The bomb rule is Pillow's limit, `Image.MAX_IMAGE_PIXELS` (None turns it off, as it does for
Pillow), applied as an error at the limit itself. Pillow only warns between the limit and twice
it, and making that warning an error takes a warnings filter. Warnings filters are process-global,
so threads that decode at once restore each other's: two uploads in the API's threadpool, or a
program calling `route()` from several threads, could let a bomb through. So the size Pillow read
from the header is compared here, before any pixel is decoded.
"""

from __future__ import annotations

import os

from PIL import Image

__all__ = ["DECODE_THREADS", "check_pixel_limit"]

# Pillow decodes and resizes without the GIL, so threads scale; past 8, more only adds contention.
DECODE_THREADS = min(8, os.cpu_count() or 1)


def check_pixel_limit(img: Image.Image) -> None:
    """Refuse an opened (not yet loaded) image of more than `Image.MAX_IMAGE_PIXELS` pixels.

    Raises:
        Image.DecompressionBombError: the error Pillow itself raises at twice the limit.
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = img.width * img.height
    if limit is not None and pixels > limit:
        raise Image.DecompressionBombError(
            f"{img.width} x {img.height} = {pixels:,} pixels is over the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS): refused as a possible decompression bomb"
        )
