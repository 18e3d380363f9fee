"""Zero-shot top-k accuracy and image-text retrieval recall@k, as an `evaluate` metric with a stated tie rule.

Load it by path (no Hub access): `evaluate.load("train/metrics/rank_recall", CONFIG)`, CONFIG one of `"zeroshot"`,
`"retrieval"` or `"class_retrieval"`.

Both are the probability that a query's own candidate is ranked among the top k: for zero-shot the query is an
image and the candidates are the classes; for retrieval, text -> image ranks every image for a text (its own image is
the one it describes) and image -> text ranks every text for an image (found if any of its own captions ranks that
high). Similarities closer than `tie_tolerance` (default 1e-4) are ties. Float rounding moves a cosine similarity by
~1e-6 between batch sizes, kernels and CPUs, and identical inputs embedded in different batches differ by as much:
without a tolerance their order would depend on the batch size. A tie is broken uniformly at random and the metric is
that expectation, so a model that embeds everything alike scores chance, not a perfect recall. `class_retrieval` ranks
candidates that carry class labels: a query finds any candidate of its own class (class-level captions, where every
image of a class is a right answer).
"""

import math

import datasets
import evaluate
import numpy as np

_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: per query, its similarity to every candidate (zeroshot: an image's cosine logits over the classes;
        retrieval: a text's cosine similarity to every image).
    references: per query, the index of its own candidate (zeroshot: the label; retrieval: the text's image), or
        (class_retrieval) the query's class.
    candidate_labels: class_retrieval only: the class of every candidate.
    ks: the k of top-k (default (1, 5) for zeroshot, (1, 5, 10) for retrieval); zeroshot drops k above the number of
        classes.
    tie_tolerance: similarities within this of each other are ties (default 1e-4).
Returns:
    zeroshot: `top{k}`; retrieval: `image_to_text_R@{k}`, `text_to_image_R@{k}` and their mean `mean_recall`;
    class_retrieval: `R@{k}`.
"""
DEFAULT_KS = {"zeroshot": (1, 5), "retrieval": (1, 5, 10), "class_retrieval": (1, 5, 10)}


def found_in_top_k(greater: np.ndarray, tied: np.ndarray, own_tied: np.ndarray, k: int) -> np.ndarray:
    """Per query, the probability that one of its own candidates ranks in the top `k`, ties broken at random.

    `greater` other candidates score above its best own candidate, `tied` others tie with it, as do `own_tied` own
    candidates (the best one included). The tied group fills the next `tied + own_tied` positions in random order; the
    query is found if an own candidate lands among the first `j = k - greater` of them: `1 - C(tied, j) /
    C(tied + own_tied, j)`, which is `j / (tied + 1)` for a single own candidate.
    """
    j = np.clip(k - greater, 0, None).astype(np.float64)
    tied, total = tied.astype(np.float64), (tied + own_tied).astype(np.float64)
    drawn = np.minimum(j, tied)  # where j > tied every draw holds an own candidate; the log terms are unused there
    log_miss = _lgamma(tied + 1) - _lgamma(tied - drawn + 1) - _lgamma(total + 1) + _lgamma(total - drawn + 1)
    found = np.where(j <= tied, 1 - np.exp(log_miss), 1.0)
    return np.where(j > 0, found, 0.0)


def rank_counts(scores: np.ndarray, is_own: np.ndarray, tie_tolerance: float):
    """`found_in_top_k`'s counts for each row of `scores` (queries x candidates) given the own candidates `is_own`."""
    scores = scores.astype(np.float64)
    best_own = np.where(is_own, scores, -np.inf).max(axis=1, keepdims=True)
    above = scores > best_own + tie_tolerance
    tie = np.abs(scores - best_own) <= tie_tolerance
    return (above & ~is_own).sum(1), (tie & ~is_own).sum(1), (tie & is_own).sum(1)


class RankRecall(evaluate.Metric):
    def _info(self):
        if self.config_name not in DEFAULT_KS:
            raise ValueError(f"Unknown configuration {self.config_name!r}: use one of {sorted(DEFAULT_KS)}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=None, tie_tolerance=1e-4, candidate_labels=None):
        scores, owner = np.asarray(predictions, dtype=np.float32), np.asarray(references)
        if scores.ndim != 2 or not len(scores):
            raise ValueError(f"predictions must be one equally long row of similarities per query, got {scores.shape}")
        ks = tuple(ks or DEFAULT_KS[self.config_name])
        if self.config_name == "class_retrieval":
            labels = np.asarray(candidate_labels if candidate_labels is not None else [])
            if labels.shape != (scores.shape[1],):
                raise ValueError(f"class_retrieval needs candidate_labels, one per candidate ({scores.shape[1]}), "
                                 f"got shape {labels.shape}")
            counts = rank_counts(scores, owner[:, None] == labels[None, :], tie_tolerance)
            if not counts[2].min() >= 1:
                raise ValueError("every query's class must have at least one candidate")
            return {f"R@{k}": float(found_in_top_k(*counts, k).mean()) for k in ks}
        if owner.min() < 0 or owner.max() >= scores.shape[1]:
            raise ValueError(f"references must index the {scores.shape[1]} candidates, "
                             f"got {owner.min()}..{owner.max()}")
        is_own = owner[:, None] == np.arange(scores.shape[1])[None, :]
        counts = rank_counts(scores, is_own, tie_tolerance)
        if self.config_name == "zeroshot":
            return {f"top{k}": float(found_in_top_k(*counts, k).mean()) for k in ks if k <= scores.shape[1]}
        image_counts = rank_counts(scores.T, is_own.T, tie_tolerance)
        metrics = {}
        for k in ks:
            metrics[f"image_to_text_R@{k}"] = float(found_in_top_k(*image_counts, k).mean())
            metrics[f"text_to_image_R@{k}"] = float(found_in_top_k(*counts, k).mean())
        metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
        return metrics
