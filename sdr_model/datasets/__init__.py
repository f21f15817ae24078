"""Downstream labelled datasets for routing and the service: reading, safe archive extraction, decoding.

Kept apart from `training/` (unlabelled pre-training data): these readers take files from strangers
(service uploads), so they are strict about archives and tolerant of individual bad images.

Names are resolved lazily (PEP 562): the torch-free API process imports the archive and manifest
readers, and must not pull in torch through `images`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdr_model.lazy_exports import lazy_getattr

if TYPE_CHECKING:
    from sdr_model.datasets.archive import ArchiveError, ArchiveLimits, ExtractedArchive, is_archive, safe_extract
    from sdr_model.datasets.images import (
        DecodedImages,
        SkippedFile,
        decode_images,
        eval_transform,
        load_image,
        normalize,
    )
    from sdr_model.datasets.labelled import (
        IMAGE_EXTENSIONS,
        MANIFEST_NAME,
        DatasetError,
        ImageRecord,
        LabelledImages,
        open_dataset,
        read_dataset,
        read_image_folder,
        read_manifest,
        stratified_split,
    )

_EXPORTS = {
    "ArchiveError": "archive",
    "ArchiveLimits": "archive",
    "ExtractedArchive": "archive",
    "is_archive": "archive",
    "safe_extract": "archive",
    "DecodedImages": "images",
    "SkippedFile": "images",
    "decode_images": "images",
    "eval_transform": "images",
    "load_image": "images",
    "normalize": "images",
    "IMAGE_EXTENSIONS": "labelled",
    "MANIFEST_NAME": "labelled",
    "DatasetError": "labelled",
    "ImageRecord": "labelled",
    "LabelledImages": "labelled",
    "open_dataset": "labelled",
    "read_dataset": "labelled",
    "read_image_folder": "labelled",
    "read_manifest": "labelled",
    "stratified_split": "labelled",
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "ArchiveError",
    "ArchiveLimits",
    "DatasetError",
    "DecodedImages",
    "ExtractedArchive",
    "ImageRecord",
    "LabelledImages",
    "SkippedFile",
    "decode_images",
    "eval_transform",
    "is_archive",
    "load_image",
    "normalize",
    "open_dataset",
    "read_dataset",
    "read_image_folder",
    "read_manifest",
    "safe_extract",
    "stratified_split",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
