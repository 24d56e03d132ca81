"""Pairwise precision / recall / F1 of clusters against a labelled truth,
computed from cluster-size contingency counts (no pair enumeration)."""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PairwiseScore:
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    records: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {"records": self.records, "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "true_pairs": self.true_pairs, "predicted_pairs": self.predicted_pairs,
                "correct_pairs": self.correct_pairs}


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise(predicted: dict[tuple[str, str], str], truth: dict[tuple[str, str], str]) -> PairwiseScore:
    """Both map (source, external_id) -> cluster id; only records in both count."""
    keys = predicted.keys() & truth.keys()
    pred = Counter(predicted[k] for k in keys)
    true = Counter(truth[k] for k in keys)
    both = Counter((predicted[k], truth[k]) for k in keys)
    return PairwiseScore(
        true_pairs=sum(_pairs(n) for n in true.values()),
        predicted_pairs=sum(_pairs(n) for n in pred.values()),
        correct_pairs=sum(_pairs(n) for n in both.values()),
        records=len(keys),
    )


def read_truth(path: Path) -> dict[tuple[str, str], str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"source", "external_id", "entity_id"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: truth file needs columns source,external_id,entity_id (missing {sorted(missing)})")
        return {(row["source"], row["external_id"]): row["entity_id"] for row in reader}
