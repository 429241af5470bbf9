#!/usr/bin/env bash
# The benchmark behind README's Results: three datasets, one table. Every step resumes where it stopped.
set -euo pipefail
pip install -c constraints.txt ".[bench]"
DATA=${DATA:-/tmp/recbole-milk-data}
R=benchmarks/results
[ -d "$DATA/tiktok" ] || python dataset_prep/mmrec.py --src ../shared/data/tiktok --name tiktok --out "$DATA"
[ -d "$DATA/synthetic" ] || python dataset_prep/synthetic.py --out "$DATA" --name synthetic
python -m benchmarks.run run --profile=full --dataset=tiktok --data_path="$DATA" --cold_item_file=../shared/data/tiktok/reference_split.json --missing_file=../shared/data/tiktok/reference_missing.json --results=$R/tiktok.jsonl --no_report
python -m benchmarks.run run --profile=ml100k --dataset=ml-100k-mm --results=$R/ml-100k-mm.jsonl --no_report
python -m benchmarks.run run --profile=multi --dataset=synthetic --data_path="$DATA" --results=$R/synthetic.jsonl --no_report
python -m benchmarks.run report --results=$R/tiktok.jsonl,$R/ml-100k-mm.jsonl,$R/synthetic.jsonl --readme=README.md
