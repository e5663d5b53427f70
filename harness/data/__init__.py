"""Dataset preparation: every source becomes the same COCO layout (see masks.write_prepared)."""
from harness.data.coco import (dataset_fingerprint, image_records, load_coco, load_split, mask_to_annotation,
                               write_json_atomic)
from harness.data.content import pool_overlap
from harness.data.masks import prepare_masks
from harness.data.neu_seg import NEU_CLASSES, prepare_neu_seg
from harness.data.pool import prepare_images
from harness.data.roboflow import find_roboflow_splits, prepare_coco
from harness.data.synthetic import generate_synthetic

__all__ = ["NEU_CLASSES", "dataset_fingerprint", "find_roboflow_splits", "generate_synthetic", "image_records",
           "load_coco", "load_split", "mask_to_annotation", "pool_overlap", "prepare_coco", "prepare_images",
           "prepare_masks", "prepare_neu_seg", "write_json_atomic"]
