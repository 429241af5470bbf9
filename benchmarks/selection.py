"""How properties/recommended/MILK.yaml was chosen, recomputed from the validation records of the candidates.

    python -m benchmarks.selection benchmarks/results/selection.jsonl

Each record is one training run of a candidate configuration on one dataset and seed (FTMT), with its validation
NDCG@10 and the validation exposure ratio of the items missing one modality. The rule uses validation figures only:
among the candidates whose validation exposure ratio lies in the target band on every dataset, the one with the
highest mean over datasets of its validation NDCG@10 divided by the reference candidate's (an MLP content model).
Test figures are in the file for information; the rule never reads them.
"""
import json
import statistics
import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

EXPOSURE_BAND = (0.67, 1.5)
REFERENCE = "K2"


def read(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def summarise(records: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """candidate -> dataset -> {valid (mean), exposure_low, exposure_high, seeds}."""
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["candidate"], record["dataset"])].append(record)
    out: Dict[str, Dict[str, Dict[str, float]]] = defaultdict(dict)
    for (candidate, dataset), runs in groups.items():
        exposures = [r["valid_exposure@20_missing_1"] for r in runs if r["valid_exposure@20_missing_1"] is not None]
        out[candidate][dataset] = {"valid": statistics.fmean(r["valid_ndcg@10"] for r in runs),
                                   "exposure_low": min(exposures), "exposure_high": max(exposures),
                                   "seeds": len(runs)}
    return out


def choose(records: Sequence[Dict[str, Any]]) -> Tuple[Optional[str], Dict[str, Dict[str, Any]]]:
    """(the chosen candidate, per candidate its normalised score and whether it is within the exposure band)."""
    summary = summarise(records)
    reference = summary[REFERENCE]
    datasets = sorted(reference)
    verdicts: Dict[str, Dict[str, Any]] = {}
    for candidate, per_dataset in summary.items():
        if set(per_dataset) != set(datasets):
            continue
        score = statistics.fmean(per_dataset[d]["valid"] / reference[d]["valid"] for d in datasets)
        in_band = all(EXPOSURE_BAND[0] <= per_dataset[d]["exposure_low"] and
                      per_dataset[d]["exposure_high"] <= EXPOSURE_BAND[1] for d in datasets)
        verdicts[candidate] = {"score": score, "in_band": in_band}
    eligible = [c for c, v in verdicts.items() if v["in_band"]]
    return (max(eligible, key=lambda c: verdicts[c]["score"]) if eligible else None), verdicts


def table(records: Sequence[Dict[str, Any]]) -> List[str]:
    summary, (chosen, verdicts) = summarise(records), choose(records)
    datasets = sorted(summary[REFERENCE])
    descriptions = {r["candidate"]: r["description"] for r in records}
    lines = ["| candidate | " + " | ".join(f"{d} valid NDCG@10 (exposure)" for d in datasets)
             + " | mean vs reference | exposure in band | chosen |",
             "| --- |" + " --- |" * (len(datasets) + 3)]
    for candidate in sorted(verdicts):
        cells = [f"{summary[candidate][d]['valid']:.4f} ({summary[candidate][d]['exposure_low']:.2f}-"
                 f"{summary[candidate][d]['exposure_high']:.2f})" for d in datasets]
        verdict = verdicts[candidate]
        lines.append(f"| {candidate}: {descriptions[candidate]} | " + " | ".join(cells)
                     + f" | {verdict['score']:.3f} | {'yes' if verdict['in_band'] else 'no'} |"
                     + f" {'**chosen**' if candidate == chosen else ''} |")
    return lines


def main(argv: Optional[List[str]] = None) -> Optional[str]:
    argv = sys.argv[1:] if argv is None else argv
    records = read(argv[0])
    print("\n".join(table(records)))
    chosen, _ = choose(records)
    print(f"chosen: {chosen}")
    return chosen


if __name__ == "__main__":
    main()
