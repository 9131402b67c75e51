"""The model card's figures as PNG: ROC curves (the paper's figures 2 and 4) and the
reliability diagram (calibration before and after temperature scaling).

matplotlib (the ``[export]`` extra) with its file-only Agg backend: no display needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 110


def _figure():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt, plt.subplots(figsize=(5.2, 5.0), dpi=DPI)


def _save(plt, fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def draw_roc(roc: dict[str, Any], title: str, path: Path) -> Path:
    """One-vs-rest ROC curve per class, AUC in the legend; a binary model shows its positive class."""
    plt, (fig, ax) = _figure()
    curves = roc["per_class"]
    names = [roc["positive_class"]] if "positive_class" in roc else list(curves)
    for name in names:
        c = curves[name]
        if c["auc"] is None:
            continue
        ax.plot(c["fpr"], c["tpr"], lw=1.8,
                label=f"{name.replace('_', ' ')} (AUC {c['auc']:.3f}, n+ {c['positives']})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (1 - specificity)",
           ylabel="true-positive rate (sensitivity)", title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def draw_reliability(calibration: dict[str, Any], title: str, path: Path) -> Path:
    """Accuracy against confidence per bin, before and after the temperature, with the ECEs."""
    plt, (fig, ax) = _figure()
    series = (("uncalibrated", f"T = 1 (ECE {calibration['ece_uncalibrated']:.3f})", "tab:red", "s"),
              ("temperature", f"T = {calibration['temperature']:.2f} (ECE {calibration['ece_temperature_in_sample']:.3f}"
                              f"; cross-fitted {calibration['ece_temperature_cross_fitted']:.3f})", "tab:blue", "o"))
    for key, label, colour, marker in series:
        bins = [b for b in calibration["reliability"][key] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker=marker, color=colour,
                lw=1.4, label=label)
        for b in bins:
            ax.annotate(str(b["count"]), (b["confidence"], b["accuracy"]), fontsize=6, color=colour,
                        textcoords="offset points", xytext=(3, -8))
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="confidence (top probability)", ylabel="accuracy",
           title=title)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)
