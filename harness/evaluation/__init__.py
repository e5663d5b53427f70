"""COCO evaluation (bbox and mask AP) as tidy rows, plus a plain-text summary for the CLI."""
from harness.evaluation.coco_eval import (
    IOU_TYPES,
    METRICS,
    evaluate,
    load_ground_truth,
    load_predictions,
    summary_table,
)

__all__ = ["IOU_TYPES", "METRICS", "evaluate", "load_ground_truth", "load_predictions", "summary_table"]
