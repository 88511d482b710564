"""Classification metrics shared by training-time validation and ``litefer eval``."""
from __future__ import annotations

import numpy as np


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    labels, preds = np.asarray(labels), np.asarray(preds)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def classification_report(labels, preds, class_names) -> dict:
    """Accuracy, mean class accuracy, macro-F1 and a per-class table (rows: true class)."""
    k = len(class_names)
    cm = confusion_matrix(labels, preds, k)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    total = int(cm.sum())
    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": [
            {"class": name, "support": int(support[i]), "precision": float(precision[i]),
             "recall": float(recall[i]), "f1": float(f1[i])}
            for i, name in enumerate(class_names)
        ],
        "confusion": cm.tolist(),
        "class_names": list(class_names),
    }


def format_report(report: dict) -> str:
    lines = [f"accuracy {report['accuracy']:.4f}  mean class acc {report['mean_class_accuracy']:.4f}  "
             f"macro-F1 {report['macro_f1']:.4f}  (n={report['n']})",
             f"{'class':<12}{'support':>8}{'precision':>10}{'recall':>8}{'f1':>8}"]
    for row in report["per_class"]:
        lines.append(f"{row['class']:<12}{row['support']:>8}{row['precision']:>10.3f}{row['recall']:>8.3f}"
                     f"{row['f1']:>8.3f}")
    if report.get("skipped"):
        why = "without a usable face or unreadable" if report.get("detector") else "unreadable"
        lines.append(f"skipped {len(report['skipped'])} {why} file(s), not counted in n")
    return "\n".join(lines)
