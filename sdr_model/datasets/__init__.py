"""Downstream labelled datasets for routing and the service: reading, safe archive extraction, decoding.

Kept apart from `training/` (unlabelled pre-training data): these readers take files from strangers
(service uploads), so they are strict about archives and tolerant of individual bad images.
"""

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
