"""Benchmark runner logic: grid expansion, durable results, resume without duplicates, aggregation. No training."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import grid, report, run, scaling, scopes, tables  # noqa: E402
from benchmarks.cell import evaluation_seconds, run_cell, training_interactions  # noqa: E402
from benchmarks.results import append_result, read_results  # noqa: E402


def _record(variant="MILK", setting="FTMT", seed=2023, ndcg20=0.01, experiment="accuracy", dataset="tiktok",
            **extra):
    record = {"dataset": dataset, "experiment": experiment, "variant": variant, "setting": setting, "seed": seed,
              "profile": "full",
              "test_result": {"recall@10": 0.01, "ndcg@10": 0.005, "recall@20": 0.02, "ndcg@20": ndcg20},
              "test_result_by_group": {"complete": {"ndcg@20": 2 * ndcg20, "recall@20": 0.03, "users": 10},
                                       "missing_1": {"ndcg@20": ndcg20 / 2, "recall@20": 0.01, "users": 5},
                                       "missing_2": {"ndcg@20": 0.0, "recall@20": 0.0, "users": 0}},
              "test_exposure_by_group": {"complete": {"exposure@20": 1.5}, "missing_1": {"exposure@20": 0.5}},
              "epochs_trained": 40, "train_seconds_per_epoch": 0.5, "peak_rss_mb": 500.0, "wall_seconds": 30.0,
              "eval_seconds_mean": 0.6, "interactions_per_second": 1000.0, "train_interactions": 500}
    record.update(extra)
    return record


# ----- grid -----

def test_full_grid_has_unique_cells_with_seed_varying_slowest():
    cells = grid.expand(grid.FULL)
    keys = [cell.key for cell in cells]
    assert len(keys) == len(set(keys)) and {c.dataset for c in cells} == {"tiktok"}
    first = [c for c in cells if c.experiment == "accuracy"][:8]
    assert {c.seed for c in first} == {2023}
    assert {(c.variant, c.setting) for c in first} == {(v, s) for v in grid.MAIN for s in ("FTMT", "MTMT")}
    assert {c.setting for c in grid.expand(grid.FULL, ["robustness"])} == {"FTFT"}


def test_variants_are_config_overrides_and_the_dataset_yaml_keeps_the_paper_values():
    cells = {c.key: dict(c.overrides) for c in grid.expand(grid.FULL)}
    ablation = cells[("tiktok", "accuracy", "w/o both", "MTMT", 2024)]
    assert ablation["use_alignment"] is False and ablation["use_invariance"] is False
    assert ablation["missing_setting"] == "MTMT" and "invariance_weight" not in ablation
    assert cells[("tiktok", "accuracy", "MILK recommended", "FTMT", 2023)]["preset"] == "recommended"
    assert cells[("tiktok", "accuracy", "+ calibration", "FTMT", 2024)]["score_calibration"] == "pattern"


def test_curve_points_average_the_seeds_every_ratio_has():
    def runs(values):
        return {seed: {"test_result": {"ndcg@20": value}} for seed, value in values.items()}

    acc = {("tiktok", "accuracy", "MILK", "FTFT"): runs({2023: 0.02, 2024: 0.04, 2025: 0.06}),
           ("tiktok", "accuracy", "MILK", grid.ratio_setting(0.5)): runs({2023: 0.01, 2024: 0.03}),
           ("tiktok", "accuracy", "MILK", grid.ratio_setting(1.0)): runs({2024: 0.02, 2025: 0.05})}
    # Only 2024 is at every measured ratio.
    assert tables.curve_points(acc, "tiktok", "MILK") == [(0.0, [0.04]), (0.5, [0.03]), (1.0, [0.02])]
    assert "| MILK | 0.0400 ± 0.0000 | — | 0.0300 ± 0.0000 | — | 0.0200 ± 0.0000 | 1 |" in "\n".join(
        tables.curve_table(acc, "tiktok"))


def test_curve_reuses_ftft_at_ratio_zero_and_draws_nested_masks_per_seed(tmp_path):
    cells = {c.key: c for c in grid.expand(grid.FULL, ["main", "robustness", "curve"])}
    assert ("tiktok", "accuracy", "MILK", "FTFT", 2023) in cells
    point = cells[("tiktok", "accuracy", "MILK", "test_missing=0.25", 2024)]
    assert dict(point.overrides)["test_missing_ratio"] == 0.25 and dict(point.overrides)["missing_file"] is None
    args = run.parse_args(["run", "--profile=full", "--missing_file=/m.json", f"--scratch={tmp_path}"])
    spec = run.cell_spec(point, args, tmp_path / "cell")["config_dict"]
    assert spec["split_seed"] == 2024 and "missing_file" not in spec
    main = run.cell_spec(cells[("tiktok", "accuracy", "MILK", "FTMT", 2024)], args, tmp_path / "c2")["config_dict"]
    assert main["split_seed"] == run.SPLIT_SEED and main["missing_file"] == "/m.json"


def test_other_datasets_run_the_comparison_and_ml100k_adds_the_three_way_scenario():
    synthetic = grid.expand(grid.MULTI, dataset="synthetic")
    assert {c.dataset for c in synthetic} == {"synthetic"} and not [c for c in synthetic if c.setting == "10/45/45"]
    three_way = [c for c in grid.expand(grid.ML100K) if c.setting == grid.THREE_WAY]
    assert {c.dataset for c in three_way} == {"ml-100k-mm"} and len(three_way) == 3 * 3
    overrides = dict(three_way[0].overrides)
    assert overrides["test_missing_ratio"] == 0.9 and overrides["missing_count_probs"] == [0.5, 0.5]


def test_baselines_block_runs_all_nine_and_bpr_on_three_seeds_with_an_epoch_cap():
    cells = grid.expand(grid.FULL, ["baselines"])
    assert {c.variant for c in cells} == set(grid.BASELINES) | {"BPR"} and len(grid.BASELINES) == 9
    assert {c.seed for c in cells} == {2023, 2024, 2025} and {c.setting for c in cells} == {"FTMT", "MTMT"}
    assert len(cells) == 10 * 2 * 3
    duif = {c.key: dict(c.overrides) for c in cells}[("tiktok", "accuracy", "DUIF", "MTMT", 2024)]
    assert duif["epochs"] == 100 and duif["missing_setting"] == "MTMT" and "invariance_weight" not in duif


def test_two_stage_baselines_are_recognised_by_their_base_class():
    assert {m for m in grid.BASELINES if run.needs_pretrained_cf(m)} == {"DropoutNet", "Heater", "GAR", "GoRec"}
    assert not run.needs_pretrained_cf("MILK") and not run.needs_pretrained_cf("BPR")


def test_unknown_block_is_named():
    with pytest.raises(ValueError, match="nope"):
        grid.expand(grid.QUICK, ["nope"])


# ----- results file -----

def test_append_is_idempotent_per_key_and_survives_a_torn_line(tmp_path):
    path = str(tmp_path / "r.jsonl")
    assert append_result(path, _record(ndcg20=0.01))
    assert not append_result(path, _record(ndcg20=0.99))  # same key: the first record stays
    with open(path, "a") as handle:
        handle.write('{"experiment": "accuracy", "variant": "MI')  # killed mid-write
    assert append_result(path, _record(seed=2024))
    records = read_results(path)
    assert [(r["seed"], r["test_result"]["ndcg@20"]) for r in records] == [(2023, 0.01), (2024, 0.01)]


def test_forget_drops_only_the_chosen_blocks_records(tmp_path):
    results = str(tmp_path / "results.jsonl")
    for record in (_record("MILK", "x1", experiment="scaling"), _record("MILK", "FTMT"),
                   _record("MILK", "FTMT", experiment="cost")):
        append_result(results, record)
    args = run.parse_args(["forget", "--profile=full", "--blocks=scaling,cost", f"--results={results}"])
    assert run.command_forget(args) == 0
    assert [(r["experiment"], r["setting"]) for r in read_results(results)] == [("accuracy", "FTMT")]
    with pytest.raises(SystemExit, match="--blocks"):
        run.command_forget(run.parse_args(["forget", f"--results={results}"]))


def test_forget_keeps_the_variants_and_seeds_it_was_not_given(tmp_path):
    results = str(tmp_path / "results.jsonl")
    for record in (_record("MILK", "FTMT"), _record("w/o both", "FTMT"), _record("MILK", "FTMT", seed=2024)):
        append_result(results, record)
    args = run.parse_args(["forget", "--profile=full", "--blocks=main", "--variants=MILK", "--seeds=2023",
                           f"--results={results}"])
    assert run.command_forget(args) == 0
    assert [(r["variant"], r["seed"]) for r in read_results(results)] == [("w/o both", 2023), ("MILK", 2024)]


def test_read_dedupes_a_run_recorded_twice(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_record(ndcg20=0.01)) + "\n" + json.dumps(_record(ndcg20=0.02)) + "\n")
    assert len(read_results(str(path))) == 1


def test_killed_grid_resumes_without_losing_or_repeating_runs(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(cell, args):
        if len(calls) == 3 and args.kill_after_three:
            raise KeyboardInterrupt  # the grid is killed while the 4th cell runs
        calls.append(cell.key)
        return _record(cell.variant, cell.setting, cell.seed, experiment=cell.experiment, dataset=cell.dataset)

    monkeypatch.setattr(run, "run_one", fake_run_one)
    results = str(tmp_path / "results.jsonl")
    argv = ["run", "--profile=quick", f"--results={results}", f"--scratch={tmp_path}", "--no_report"]
    args = run.parse_args(argv)
    args.kill_after_three = True
    with pytest.raises(KeyboardInterrupt):
        run.command_run(args)
    assert len(read_results(results)) == 3
    args.kill_after_three = False
    assert run.command_run(args) == 0
    expected = [c.key for c in grid.expand(grid.QUICK)]
    assert calls == expected  # every cell ran exactly once, in order
    assert sorted(map(tuple, ([r[k] for k in ("dataset", "experiment", "variant", "setting", "seed")]
                              for r in read_results(results)))) == sorted(expected)
    run.command_run(args)  # a finished grid runs nothing
    assert len(calls) == len(expected)


def test_seeds_option_runs_only_those_seeds_and_a_later_full_run_adds_the_rest(tmp_path, monkeypatch):
    ran = []

    def fake_run_one(cell, args):
        ran.append(cell.seed)
        return _record(cell.variant, cell.setting, cell.seed, experiment=cell.experiment, dataset=cell.dataset)

    monkeypatch.setattr(run, "run_one", fake_run_one)
    results = str(tmp_path / "results.jsonl")
    argv = ["run", "--profile=full", "--blocks=main", f"--results={results}", f"--scratch={tmp_path}", "--no_report"]
    run.command_run(run.parse_args(argv + ["--seeds=2023,2025"]))
    assert set(ran) == {2023, 2025} and len(ran) == 2 * len(grid.MAIN) * 2
    run.command_run(run.parse_args(argv))
    assert sorted(set(ran[16:])) == [2024, 2026, 2027] and len(ran) == len(grid.expand(grid.FULL, ["main"]))


def test_variants_option_runs_only_those_variants(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(run, "run_one", lambda cell, args: ran.append(cell.variant) or _record(
        cell.variant, cell.setting, cell.seed, experiment=cell.experiment, dataset=cell.dataset))
    run.command_run(run.parse_args(["run", "--profile=full", "--blocks=main", "--variants=MILK,w/o both",
                                    f"--results={tmp_path / 'r.jsonl'}", f"--scratch={tmp_path}", "--no_report"]))
    assert sorted(set(ran)) == ["MILK", "w/o both"] and len(ran) == 2 * 2 * len(grid.FULL_SEEDS)


def test_a_cell_recorded_meanwhile_by_another_runner_is_skipped(tmp_path, monkeypatch):
    results = str(tmp_path / "results.jsonl")
    cells = grid.expand(grid.QUICK)
    ran = []

    def fake_run_one(cell, args):
        ran.append(cell.key)
        if len(ran) == 1:  # a second runner finishes the next cell while this one runs the first
            other = cells[1]
            append_result(results, _record(other.variant, other.setting, other.seed, experiment=other.experiment,
                                           dataset=other.dataset))
        return _record(cell.variant, cell.setting, cell.seed, experiment=cell.experiment, dataset=cell.dataset)

    monkeypatch.setattr(run, "run_one", fake_run_one)
    run.command_run(run.parse_args(["run", f"--results={results}", f"--scratch={tmp_path}", "--no_report"]))
    assert cells[1].key not in ran and len(ran) == len(cells) - 1
    assert len(read_results(results)) == len(cells)


def test_a_failed_cell_is_not_recorded_and_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "run_one", lambda cell, args: None)
    results = str(tmp_path / "results.jsonl")
    args = run.parse_args(["run", f"--results={results}", f"--scratch={tmp_path}", "--no_report"])
    assert run.command_run(args) == 1
    assert read_results(results) == []


def test_cell_spec_points_scratch_and_data_options(tmp_path):
    args = run.parse_args(["run", "--profile=full", "--data_path=/data", "--missing_file=/m.json",
                           f"--scratch={tmp_path}"])
    cells = {c.key: c for c in grid.expand(grid.FULL)}
    spec = run.cell_spec(cells[("tiktok", "accuracy", "MILK", "FTMT", 2025)], args, tmp_path / "cell")
    config = spec["config_dict"]
    assert spec["model"] == "MILK" and spec["dataset"] == "tiktok"
    assert config["seed"] == 2025 and config["split_seed"] == run.SPLIT_SEED
    assert config["missing_file"] == "/m.json" and config["checkpoint_dir"].startswith(str(tmp_path))


def test_two_stage_cells_share_one_stage_one_folder_per_split(tmp_path, monkeypatch):
    args = run.parse_args(["run", "--profile=full", "--data_path=/data", "--cold_item_file=/split.json",
                           f"--scratch={tmp_path}"])
    folder = run.pretrained_cf_folder(args)
    other = run.pretrained_cf_folder(run.parse_args(["run", "--profile=full", "--data_path=/data",
                                                     f"--scratch={tmp_path}"]))
    assert folder != other and folder.parent == other.parent  # another split, another export
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")

    def no_export(*a, **k):
        raise AssertionError("stage 1 ran although its folder is complete")

    monkeypatch.setattr(run.subprocess, "run", no_export)
    assert run.ensure_pretrained_cf(args) == str(folder)
    cells = {c.key: c for c in grid.expand(grid.FULL, ["baselines"])}
    spec = run.cell_spec(cells[("tiktok", "accuracy", "GAR", "FTMT", 2023)], args, tmp_path / "cell", str(folder))
    assert spec["model"] == "GAR" and spec["config_dict"]["pretrained_cf_dir"] == str(folder)
    assert spec["config_dict"]["cold_item_file"] == "/split.json"


def test_a_failed_stage_one_fails_its_cells_without_recording_them(tmp_path, monkeypatch):
    class Failed:
        returncode = 3

    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: Failed())
    results = str(tmp_path / "results.jsonl")
    args = run.parse_args(["run", "--profile=full", "--blocks=baselines", f"--results={results}",
                           f"--scratch={tmp_path}", "--no_report"])
    cell = next(c for c in grid.expand(grid.FULL, ["baselines"]) if c.model == "Heater")
    assert run.run_one(cell, args) is None
    assert not (tmp_path / "cells" / cell.name).exists()  # the cell itself never started
    assert read_results(results) == []


# ----- measurements -----

def test_evaluation_seconds_are_read_from_colored_recbole_logs(tmp_path):
    (tmp_path / "MILK").mkdir()
    (tmp_path / "MILK" / "run.log").write_text(
        "INFO  \x1b[1;32mepoch 9 evaluating\x1b[0m [\x1b[1;34mtime\x1b[0m: 0.56s, valid_score: 0.01]\n"
        "epoch 19 evaluating [time: 1.44s, valid_score: 0.02]\nepoch 19 training [time: 9.00s, train loss: 1]\n")
    assert evaluation_seconds(str(tmp_path)) == [0.56, 1.44]


def test_training_interactions_count_warm_items_only(tmp_path):
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\n1\t10\n2\t10\n2\t11\n3\t12\n")
    (tmp_path / "split.json").write_text(json.dumps({"warm": [10, 12], "valid": [11], "test": []}))
    assert training_interactions(str(tmp_path / "split.json"), str(tmp_path / "d.inter")) == 3


def test_scaled_dataset_duplicates_users_and_keeps_items(tmp_path):
    source = tmp_path / "src" / "toy"
    source.mkdir(parents=True)
    (source / "toy.inter").write_text("user_id:token\titem_id:token\n1\t10\n2\t11\n")
    (source / "toy.yaml").write_text("load_col: {inter: [user_id, item_id]}\n")
    (source / "visual.npy").write_bytes(b"x")
    data_path = scaling.build_scaled(str(tmp_path / "src"), "toy", 3, str(tmp_path / "out"))
    target = Path(data_path) / "toy_x3"
    lines = (target / "toy_x3.inter").read_text().splitlines()[1:]
    assert len(lines) == 6 and len({line.split("\t")[0] for line in lines}) == 6
    assert {line.split("\t")[1] for line in lines} == {"10", "11"}
    assert (target / "toy_x3.yaml").exists() and (target / "visual.npy").exists()


# ----- report -----

def _fake_results():
    records = []
    for seed, (ftft, ftmt) in zip((2023, 2024), ((0.020, 0.015), (0.030, 0.027))):
        records += [_record("MILK", "FTFT", seed, ftft), _record("MILK", "FTMT", seed, ftmt),
                    _record("MILK", "test_missing=1", seed, ftmt / 2),
                    _record("MILK recommended", "FTMT", seed, 0.03, test_exposure_by_group={
                        "missing_1": {"exposure@20": 0.9}}),
                    _record("DUIF", "FTMT", seed, 0.025), _record("VBPR", "FTMT", seed, 0.02),
                    _record("DUIF", "FTMT", seed, 0.01, dataset="synthetic")]
    records.append(_record("MILK", "FTMT", 2023, 0.5, experiment="cost"))
    return records


def test_mean_and_sample_std():
    assert tables.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert tables.fmt([0.5]) == "0.5000 ± 0.0000" and tables.fmt([]) == "—"


def test_robustness_loss_is_paired_by_seed():
    acc = tables.index(_fake_results())
    assert tables.robustness_losses(acc, "tiktok", "MILK") == [pytest.approx(0.25), pytest.approx(0.1)]
    assert tables.robustness_losses(acc, "tiktok", "w/o both") == []


def test_group_ratio_and_exposure_come_from_the_group_results():
    runs = tables.index(_fake_results())[("tiktok", "accuracy", "MILK", "FTMT")]
    assert tables.group_ratio(runs) == pytest.approx(0.25)  # missing_1 is ndcg/2, complete 2 * ndcg
    assert tables.exposure_values(runs) == [0.5, 0.5]


def test_the_comparison_says_how_many_seeds_measured_exposure_when_older_records_did_not():
    older = _record("DUIF", seed=2024, ndcg20=0.02)
    del older["test_exposure_by_group"]
    acc = tables.index([_record("DUIF", seed=2023, ndcg20=0.02), older, _record("VBPR", ndcg20=0.01)])
    rows = {line.split(" | ")[2]: line.split(" | ") for line in tables.comparison_table(acc, ["DUIF", "VBPR"])[2:]}
    assert rows["DUIF"][6:] == ["0.50", "2 (exposure: 1) |"]
    assert rows["VBPR"][6:] == ["0.50", "1 |"]


def test_options_are_compared_with_milk_on_the_seeds_both_ran():
    records = [_record("MILK", seed=seed, ndcg20=0.01 * (seed - 2022), best_valid_score=0.02)
               for seed in (2023, 2024, 2025)]
    records.append(_record("+ calibration", seed=2024, ndcg20=0.03, best_valid_score=0.01))
    lines = tables.variant_table(tables.index(records), "tiktok", ["MILK", "+ calibration"], ("FTMT",), paired=True)
    assert "vs MILK, same seeds: valid / test" in lines[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines[2:]}
    assert rows["MILK"][3] == "1.00x / 1.00x"
    assert rows["+ calibration"][3] == "0.50x / 1.50x"  # seed 2024 only: valid 0.01 / 0.02, test 0.03 / 0.02


def test_targets_compare_the_recommended_milk_with_the_best_baseline_of_its_dataset():
    rows = tables.targets_table(tables.index(_fake_results()))
    assert rows[2] == ("| tiktok | FTMT | MILK recommended | 0.0300 | 2 | DUIF 0.0250 | 2/9 | 1.20x | 0.25 | 0.90 "
                       "| ✓ ✗ ✓ |")
    assert len(rows) == 3  # synthetic has no recommended run yet


def test_the_split_table_sets_the_validation_groups_beside_the_test_groups():
    valid = {"valid_result_by_group": {"complete": {"ndcg@20": 0.02}, "missing_1": {"ndcg@20": 0.02}},
             "valid_exposure_by_group": {"missing_1": {"exposure@20": 1.1}}}
    records = [_record("MILK", "FTMT", 2023, 0.01, **valid), _record("MILK", "FTMT", 2024, 0.03),
               _record("DUIF", "FTMT", 2023, 0.02)]
    rows = tables.split_group_table(tables.index(records), ("MILK", "DUIF"))
    # Only the seed that recorded validation groups counts: valid 0.02 / 0.02, test (0.01 / 2) / (2 * 0.01).
    assert rows[2:] == ["| tiktok | FTMT | MILK | 1.00 | 0.25 | 1.10 | 0.50 | 1 |"]


def test_scaling_rows_compare_each_variant_with_its_own_x1():
    records = [_record(variant, f"x{factor}", experiment="scaling", train_seconds_per_epoch=seconds)
               for variant, factor, seconds in (("MILK", 1, 1.0), ("MILK", 4, 8.0), ("MILK dense Adam", 1, 0.5),
                                                ("MILK dense Adam", 4, 2.0))]
    rows = tables.scaling_table(tables.index(records), "tiktok")
    assert rows[2].startswith("| MILK | x1 |") and "| 8.00 | 8.00 |" in rows[3]
    assert rows[5].startswith("| MILK dense Adam | x4 |") and "| 2.00 | 4.00 |" in rows[5]


def test_report_splices_the_readme_block_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nintro\n{report.README_BEGIN}\nold table\n{report.README_END}\n## Next\nkept\n")
    results = tmp_path / "out" / "results.jsonl"
    for record in _fake_results():
        append_result(str(results), record)
    args = run.parse_args(["report", f"--results={results}", f"--readme={readme}"])
    assert run.command_report(args) == 0
    text = readme.read_text()
    assert text.startswith("# Title\nintro\n") and text.endswith(f"{report.README_END}\n## Next\nkept\n")
    assert "old table" not in text and "## Results" not in text
    assert "#### Three datasets, one table" in text and "| tiktok | FTMT | MILK | 0.0210 ± 0.0085" in text
    assert "python -m benchmarks.run report --results=" in text  # the command that produced it
    assert f"](out/{report.ROBUSTNESS_FILE})" in text  # figures linked relative to the README
    readme.write_text("# no block\n")
    with pytest.raises(SystemExit, match="no benchmark block"):
        run.command_report(args)
    assert readme.read_text() == "# no block\n"


def test_report_reads_several_results_files_and_writes_tables_and_figures(tmp_path):
    records = _fake_results()
    for dataset in ("tiktok", "synthetic"):
        for record in records:
            if record["dataset"] == dataset:
                append_result(str(tmp_path / f"{dataset}.jsonl"), record)
    args = run.parse_args(["report", f"--results={tmp_path / 'tiktok.jsonl'},{tmp_path / 'synthetic.jsonl'}"])
    assert run.command_report(args) == 0
    text = (tmp_path / "results.md").read_text()
    assert "| synthetic | FTMT | DUIF | 0.0100 ± 0.0000" in text
    assert "17.5 ± 10.6 %" in text  # losses 25 % and 10 %
    assert "| MILK | 0.0250 ± 0.0071 | — | — | — | 0.0105 ± 0.0042 | 2 |" in text  # curve: 0 is FTFT
    assert "| tiktok | main | 4 | 40 |" in text and "| tiktok | robustness | 2 | 20 |" in text
    assert "| FTMT | MILK | missing_1 | 5 | 0.0105 ± 0.0042 |" in text and "missing_2 |" not in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / report.CURVE_FILE).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / report.ROBUSTNESS_FILE).is_file()


def test_ann_benchmark_measures_hnsw_recall_against_exact():
    pytest.importorskip("faiss")
    from benchmarks import ann_recall

    figures = ann_recall.main(["--items", "3000", "--dim", "8", "--queries", "40", "--single_queries", "5",
                               "--k", "10", "--ef_search", "1,2000"])
    assert figures["items"] == 3000 and figures["dim"] == 8
    # ef_search 1 explores one candidate per step; 2000 visits most of the graph and matches exact.
    assert figures["hnsw_ef2000_recall@10"] >= 0.99 > figures["hnsw_ef1_recall@10"]


# ----- scopes (benchmarks/scopes.py) -----

def _scope_record(model, seed, ndcg_new, share=0.05):
    scope = {"new": {"ndcg@20": ndcg_new, "recall@20": 2 * ndcg_new},
             "warm": {"ndcg@20": 0.1, "recall@20": 0.2}, "all": {"ndcg@20": 0.05, "recall@20": 0.08}}
    return {"dataset": "tiktok", "experiment": "scopes", "variant": model, "setting": "FTMT", "seed": seed,
            "test_result_by_scope": scope, "test_new_item_share": {"new_item_share@20": share, "candidate_share": 0.2}}


def test_scope_cells_cover_models_and_seeds_with_every_scope(tmp_path):
    args = scopes.parse_args(["run", "--dataset=tiktok", f"--scratch={tmp_path}", "--epochs=3"])
    cells = scopes.cells(args)
    assert len({cell.key for cell in cells}) == len(cells) == 6 * 3
    assert [cell.seed for cell in cells[:6]] == [2023] * 6 and {cell.variant for cell in cells} == set(scopes.MODELS)
    spec = run.cell_spec(cells[0], args, tmp_path / "cell")["config_dict"]
    assert spec["eval_scopes"] == ("new", "warm", "all") and spec["epochs"] == 3
    assert spec["split_seed"] == run.SPLIT_SEED and spec["missing_setting"] == "FTMT" and "eval_step" not in spec


def test_scope_table_averages_seeds_per_model_and_scope():
    records = [_scope_record("MILK", 2023, 0.02, 0.1), _scope_record("MILK", 2024, 0.04, 0.3),
               _scope_record("BPR", 2023, 0.01), dict(_scope_record("VBPR", 2023, 0.5), setting="MTMT")]
    lines = scopes.scope_table(records, "tiktok", "FTMT", models=scopes.MODELS)
    assert lines[2].startswith("| model | seeds | new NDCG@20 | warm NDCG@20 | all NDCG@20 | new Recall@20")
    milk = next(line for line in lines if line.startswith("| MILK"))
    assert milk.startswith("| MILK | 2 | 0.0300 ± 0.0141 | 0.1000 ± 0.0000 | 0.0500 ± 0.0000 | 0.0600 ± 0.0283")
    assert milk.endswith("| 0.200 ± 0.141 (candidates 0.20) |")
    assert not [line for line in lines if line.startswith(("| VBPR", "| DUIF"))]  # another setting; not run


def test_scope_runs_refuse_two_stage_models(tmp_path):
    with pytest.raises(SystemExit, match="DropoutNet"):
        scopes.main(["run", "--models=BPR,DropoutNet", f"--scratch={tmp_path}"])


# ----- preset selection (benchmarks/selection.py) -----

def _selection(candidate, dataset, valid, exposure, seed=2023):
    return {"candidate": candidate, "description": candidate, "dataset": dataset, "seed": seed,
            "valid_ndcg@10": valid, "valid_exposure@20_missing_1": exposure, "test_ndcg@20": 0.0}


def test_the_preset_is_the_best_normalised_validation_score_within_the_exposure_band():
    from benchmarks import selection

    records = [_selection("K2", "a", 0.10, 0.3), _selection("K2", "b", 0.020, 0.9),
               _selection("K5", "a", 0.12, 1.0), _selection("K5", "b", 0.018, 0.8),   # mean (1.2 + 0.9) / 2
               _selection("K7", "a", 0.11, 1.0), _selection("K7", "b", 0.021, 0.7),   # mean (1.1 + 1.05) / 2
               _selection("K8", "a", 0.20, 2.0), _selection("K8", "b", 0.030, 1.0)]   # best, out of the band
    chosen, verdicts = selection.choose(records)
    assert chosen == "K7" and verdicts["K7"]["score"] == pytest.approx(1.075)
    assert not verdicts["K2"]["in_band"] and not verdicts["K8"]["in_band"]


def test_a_cell_records_every_figure_of_the_run_but_not_its_config_or_paths(tmp_path, monkeypatch):
    import recbole_milk.quick_start as quick_start

    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\n1\t1\n")
    result = {"model": "MILK", "dataset": "toy", "test_result": {"ndcg@20": 0.5},
              "test_exposure_by_group": {"missing_1": {"exposure@20": 0.8}}, "epochs_trained": 3,
              "train_seconds_per_epoch": 0.1, "saved_model_file": "/scratch/m.pth", "artifact_file": "/scratch/a",
              "config": {"log_dir": str(tmp_path), "data_path": str(tmp_path), "dataset": "toy"}}
    monkeypatch.setattr(quick_start, "run_recbole_milk", lambda **kwargs: result)
    record = run_cell({"model": "MILK", "dataset": "toy", "config_dict": {}})
    assert record["test_exposure_by_group"] == {"missing_1": {"exposure@20": 0.8}}
    assert record["test_result"] == {"ndcg@20": 0.5} and record["epochs_trained"] == 3
    assert not {"config", "saved_model_file", "artifact_file", "model", "dataset"} & set(record)


def test_the_gpu_check_fails_at_once_and_clearly_without_a_gpu(tmp_path):
    import os
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would run")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OUT=str(tmp_path / "out")))
    assert done.returncode == 2
    assert "needs a CUDA GPU" in done.stderr and "nothing was run" in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_dataset_of_the_comparison_gets_its_per_group_table_with_the_baselines():
    headings = {heading: lines for heading, lines in report.sections(_fake_results())}
    for dataset in ("tiktok", "synthetic"):
        lines = headings[f"Per missing-pattern group ({dataset}, test, mean ± std over seeds)"]
        assert any("| DUIF |" in line for line in lines)


def test_the_rows_of_the_option_and_optimiser_tables_get_their_groups_too():
    records = _fake_results() + [_record("+ calibration"), _record("MILK recommended dense Adam")]
    lines = dict(report.sections(records))["Per missing-pattern group (tiktok, test, mean ± std over seeds)"]
    for variant in ("+ calibration", "MILK recommended dense Adam"):
        assert any(f"| {variant} | missing_1 |" in line for line in lines)
