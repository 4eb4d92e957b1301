"""The PNG plots of an evaluation, logged with its MLflow run and embedded in model cards.

One ROC and one precision-recall curve per test fold, a reliability curve pooled over the
folds, and the feature importance of the first fold's kept model (when one was kept).
Labels come from the evaluation itself, so the plots need no column names. The global
explanation's plots (mean |SHAP| per feature, dependence of the top features) come from an
:class:`~shipyard.governance.explain.Explanation` of evaluation rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.governance.explain import Explanation
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.splits import Fold


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fold_label(fold: Fold) -> str:
    """A curve's legend: ``fold 2 (test 2018-08-08)``, or ``test set`` for a held-out split
    with no time (a text model's test reviews)."""
    if fold.test_start is None:  # an undated split: text data has no time
        return "test set"
    return f"fold {fold.index} (test {fold.test_start})"


def evaluation_plots(evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
    """Write roc.png and pr.png (per fold), calibration.png (pooled) and importance.png."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve, roc_curve

    from shipyard.training.metrics import reliability_curve

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = _figure()
    for result in evaluation.folds:
        yt = result.labels
        fpr, tpr, _ = roc_curve(yt, result.scores)
        auc = result.metrics["roc_auc"]
        ax.plot(
            fpr,
            tpr,
            lw=1,
            label=f"{fold_label(result.fold)}, AUC {auc:.3f}",
        )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}")
    ax.legend(fontsize=7, loc="lower right")
    paths.append(_save(fig, folder / "roc.png"))

    fig, ax = _figure()
    for result in evaluation.folds:
        yt = result.labels
        precision, recall, _ = precision_recall_curve(yt, result.scores)
        ap = result.metrics["average_precision"]
        ax.step(
            recall, precision, where="post", lw=1, label=f"{fold_label(result.fold)}, AP {ap:.3f}"
        )
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {title}")
    ax.legend(fontsize=7)
    paths.append(_save(fig, folder / "pr.png"))

    fig, ax = _figure()
    pooled_y = np.concatenate([r.labels for r in evaluation.folds])
    pooled_p = np.concatenate([r.scores for r in evaluation.folds])
    curve = reliability_curve(pooled_y, pooled_p, n_bins=15)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    ax.plot(curve["predicted"], curve["observed"], "o-", label="model (quantile bins)")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        title=f"Calibration — {title}",
    )
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "calibration.png"))

    model = next((r.model for r in evaluation.folds if r.model is not None), None)
    if model is not None:
        importance = sorted(model.feature_importance().items(), key=lambda kv: kv[1])
        fig, ax = _figure()
        ax.barh([k for k, _ in importance], [v for _, v in importance])
        ax.set(xlabel="share of importance", title=f"Feature importance — {title}")
        ax.tick_params(axis="y", labelsize=6)
        paths.append(_save(fig, folder / "importance.png"))
    return paths


def explanation_plots(explanation: Explanation, folder: Path, title: str, top: int) -> list[Path]:
    """Write shap_importance.png (mean |SHAP| per feature) and one dependence plot
    (value against attribution) for each of the ``top`` most important features."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    importance = explanation.mean_abs()
    unit = f"mean |SHAP| ({explanation.output_space})"
    fig, ax = _figure()
    ordered = list(importance.items())[::-1]  # largest at the top
    ax.barh([k for k, _ in ordered], [v for _, v in ordered])
    ax.set(xlabel=unit, title=f"Mean |SHAP| — {title}")
    ax.tick_params(axis="y", labelsize=6)
    paths = [_save(fig, folder / "shap_importance.png")]
    for rank, name in enumerate(list(importance)[:top], start=1):
        j = explanation.features.index(name)
        values = explanation.data[:, j]
        shown = np.isfinite(values)
        fig, ax = _figure()
        ax.axhline(0.0, color="k", lw=0.6)
        ax.scatter(values[shown], explanation.values[shown, j], s=6, alpha=0.5)
        ax.set(
            xlabel=f"{name} (value)",
            ylabel=f"SHAP of {name} ({explanation.output_space})",
            title=f"Dependence #{rank}: {name} — {title}",
        )
        paths.append(_save(fig, folder / f"shap_dependence_{rank}.png"))
    return paths
