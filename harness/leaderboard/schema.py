"""The vocabulary of a run folder's files (columns, metric and file names), shared by reading and rendering so
that neither imports the other for a constant."""
from __future__ import annotations

from pathlib import Path

KEY = ["segmenter", "profile", "adapter", "degradation", "severity", "seed"]
ROW = ["segmenter", "profile", "adapter"]
SETTING = ["degradation", "severity"]
RESULT_COLUMNS = ["cell", *KEY, "iou_type", "metric", "category", "value", "note"]
MAIN_METRICS = ("AP", "AP50", "AP75")
SCALE_METRICS = ("AP_small", "AP_medium", "AP_large")
FIDELITY = "fidelity"
FIDELITY_METRICS = ("PSNR", "SSIM")
#: the feature gap's rows (harness.evaluation.featuregap)
FEATURE = "feature"
FEATURE_METRICS = ("KID", "KID_lo", "KID_hi", "FD32")
#: iou_types that are per-cell image measures, not COCO evaluations, with the metrics each may have
MEASURES = {FIDELITY: FIDELITY_METRICS, FEATURE: FEATURE_METRICS}
#: written by `harness report` when cells have a feature gap: can an adapter be picked by it, without labels?
SELECTION = "selection.csv"
SELECTION_COLUMNS = ["segmenter", "profile", "degradation", "severity", "iou_type", "metric", "adapters", "spearman",
                     "lo", "hi", "chosen", "chosen_ap", "best", "best_ap", "regret", "flagged"]
COCO_METRICS = MAIN_METRICS + SCALE_METRICS
IOU_ORDER = ("bbox", "segm")
IDENTITY = "identity"
MISSING = "missing"
SIGNIFICANCE = "significance.csv"
SIGNIFICANCE_COLUMNS = ["segmenter", "profile", "adapter", "degradation", "severity", "iou_type", "metric", "seeds",
                        "delta", "lo", "hi", "resamples", "significant"]
#: written by `harness report` when a run has training-side baselines: every row vs its plain segmenter + identity
BASELINES = "baselines.csv"
BASELINE_COLUMNS = [*SIGNIFICANCE_COLUMNS[:3], "reference_segmenter", "reference_adapter", *SIGNIFICANCE_COLUMNS[3:],
                    "value", "reference"]
#: written by `harness report` when a run has an oracle-T: every method row's gap closed, see report.build.gaps
GAP = "gap.csv"
GAP_COLUMNS = ["segmenter", "profile", "adapter", "degradation", "severity", "iou_type", "metric", "seeds", "oracle",
               "reference_segmenter", "reference_adapter", "value", "reference", "oracle_value", "gain", "span",
               "span_lo", "span_hi", "gap_closed", "lo", "hi", "resamples", "shown", "reason"]
SIGNIFICANCE_KEY = [*ROW, *SETTING, "iou_type", "metric"]
PLOTS_MANIFEST = Path("plots") / "manifest.json"
