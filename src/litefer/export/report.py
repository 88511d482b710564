"""The markdown report of one export: command, files, hardware, checks and accuracy."""
from __future__ import annotations

import sys


def markdown(report: dict) -> str:
    p = report["parity"]
    lines = [f"# litefer export: {report['format']}", "",
             f"- command: `litefer {' '.join(sys.argv[1:])}`" if sys.argv[1:2] == ["export"] else
             "- made by `litefer.export.export`",
             f"- weights: `{report['weights']}` ({report['model_name']}, input {report['input_size']} px)",
             f"- output: `{report['output']}` ({report['bytes'] / 1e6:.2f} MB)",
             f"- hardware: {report.get('hardware', 'not recorded')}"]
    if "calibration" in report:
        c = report["calibration"]
        lines.append(f"- calibration: {c['faces']} face crops from `{c['source']}`, {c['method']}; "
                     f"left in float: {', '.join(f'`{n}`' for n in c.get('float_nodes', [])) or 'nothing'}")
    lines += ["", "| check | value |", "|---|---|",
              f"| parity faces (`{p['source']}`) | {p['faces']} |",
              f"| max abs logit difference vs torch | {p['max_abs_diff']:.3g} |",
              f"| max probability difference | {p['max_prob_diff']:.3g} |",
              f"| top-1 agreement with torch | {100 * p['top1_agreement']:.2f} % |"]
    if "cam_max_abs_diff" in p:
        lines.append(f"| max abs `cam` (Grad-CAM map) difference vs torch's ExplainedNet | {p['cam_max_abs_diff']:.3g} |")
    acc = report.get("accuracy")
    if acc:
        lines += [f"| accuracy, {acc['split']}, {acc['images']} images{' (flip TTA)' if acc['tta_flip'] else ''}: "
                  f"torch fp32 | {100 * acc['torch']:.2f} % |"]
        if "onnx_fp32" in acc:
            lines.append(f"| accuracy: ONNX Runtime fp32 | {100 * acc['onnx_fp32']:.2f} % |")
        lines.append(f"| accuracy: this export | {100 * acc['export']:.2f} % |")
    fails = report["checks"]["failures"]
    lines += ["", f"Checks: {'FAILED: ' + '; '.join(fails) if fails else 'passed'} "
              f"(limits: max diff {report['checks']['max_diff']}, min agreement {report['checks']['min_agreement']}, "
              f"max accuracy drop {report['checks']['max_accuracy_drop_points']} points"
              + (f", max cam diff {report['checks']['max_cam_diff']}" if report['checks'].get('max_cam_diff') else "")
              + ").", ""]
    return "\n".join(lines)
