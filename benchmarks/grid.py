"""The benchmark grid: variants as config overrides, experiments as (variants x settings) blocks, two profiles.

A cell is one training run, keyed by (experiment, variant, setting, seed). Accuracy runs of every table share the
experiment "accuracy", so a cell such as (MILK, FTMT, 2023) is trained once and read by Table 2, the ablations,
the robustness bars and the per-group table alike.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

# Variant name -> (model, config overrides). MILK's ablation switches are the options of recbole_milk/model/milk.py.
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "MILK": ("MILK", {}),
    "w/o both": ("MILK", {"use_alignment": False, "use_invariance": False}),
    "w/o CMAM": ("MILK", {"use_alignment": False}),
    "w/o CEIM": ("MILK", {"use_invariance": False}),
    "w/o e=0": ("MILK", {"include_equal_env": False}),
    "w/o cs": ("MILK", {"cyclic_shift": False}),
    "w/o random": ("MILK", {"resample_envs": False}),
    "MILK zero-imputed": ("MILK", {"imputation": "zero"}),
    "MILK fusion=available": ("MILK", {"fusion": "available"}),
    "MILK sparse users": ("MILK", {"sparse_user_gradients": True}),
    "BPR": ("BPR", {}),
    "Random": ("Random", {}),
}
# The paper's new-item baselines (recbole_milk/model/), each with its properties/model/<Model>.yaml defaults.
# DropoutNet, Heater, GAR and GoRec are two-stage: the runner pre-trains warm BPR embeddings once per grid.
BASELINES = ["DUIF", "VBPR", "MTPR", "DropoutNet", "Heater", "CLCRec", "CCFCRec", "GAR", "GoRec"]
VARIANTS.update({name: (name, {}) for name in BASELINES})
# Filled from the tuning step's output (tuned.json next to the results file); see runner.tuned_variant.
TUNED_VARIANT = "MILK tuned"

CURVE_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)
SCALES = (1, 2, 4)


def ratio_setting(ratio: float) -> str:
    """Setting name of a missing-ratio curve point. Ratio 0 is FTFT itself, so the curve reuses the FTFT cells."""
    return "FTFT" if ratio == 0 else f"test_missing={ratio:g}"


def setting_overrides(setting: str) -> Dict[str, Any]:
    """Config overrides of a setting name (FTFT / FTMT / MTMT, or a curve point test_missing=R)."""
    if setting in ("FTFT", "FTMT", "MTMT"):
        return {"missing_setting": setting}
    if setting.startswith("test_missing="):
        # Simulated masks at this ratio, drawn with split_seed; missing_file (fixed FTMT/MTMT masks) does not apply.
        return {"missing_setting": "FTMT", "test_missing_ratio": float(setting.split("=", 1)[1]),
                "missing_file": None}
    if setting.startswith("x"):  # scaling rows: FTMT on the dataset duplicated N times, see benchmarks/scaling.py
        return {"missing_setting": "FTMT"}
    raise ValueError(f"unknown setting {setting!r}")


@dataclass(frozen=True)
class Cell:
    experiment: str
    variant: str
    setting: str
    seed: int
    model: str
    overrides: Tuple[Tuple[str, Any], ...] = ()

    @property
    def key(self) -> Tuple[str, str, str, int]:
        return (self.experiment, self.variant, self.setting, self.seed)

    @property
    def name(self) -> str:
        """A file-system safe name for the cell's scratch folder."""
        raw = f"{self.experiment}-{self.variant}-{self.setting}-{self.seed}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


@dataclass
class Block:
    """variants x settings x seeds of one experiment; `extra` overrides apply to every cell of the block."""
    name: str
    variants: List[str]
    settings: List[str]
    experiment: str = "accuracy"
    extra: Dict[str, Any] = field(default_factory=dict)
    seeds: Optional[List[int]] = None  # None: the profile's seeds


@dataclass
class Profile:
    name: str
    seeds: List[int]
    base: Dict[str, Any]           # overrides for every accuracy cell (epoch cap etc.)
    blocks: List[Block]
    cost_overrides: Dict[str, Any]
    description: str = ""
    # dataset -> MILK hyperparameters every MILK cell starts from, so that the "default" rows keep the paper's
    # values even after tuned values land in properties/dataset/<dataset>.yaml. The tuned variant overrides them.
    milk_pins: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # Stage 1 of the two-stage baselines: config overrides of the warm BPR run that exports their CF embeddings
    # (dataset_prep/export_cf_embeddings.py), on the grid's split.
    pretrained_cf: Dict[str, Any] = field(default_factory=lambda: {"epochs": 100, "seed": 2023})


FULL_SEEDS = [2023, 2024, 2025, 2026, 2027]
TABLE2_SETTINGS = ["FTMT", "MTMT", "FTFT"]
ABLATIONS = ["w/o CMAM", "w/o CEIM", "w/o e=0", "w/o cs", "w/o random"]

FULL = Profile(
    name="full",
    seeds=FULL_SEEDS,
    # Protocol of milk-spec.md section 3 as in properties/overall.yaml: evaluate every 10 epochs on valid NDCG@10,
    # stop after 3 evaluations without gain, at most 300 epochs. No tighter cap: the w/o-both variant was still
    # improving at epoch 100, and a cap would flatter MILK.
    base={},
    # Ordered by importance: a partial grid still answers the first questions, and seeds are interleaved.
    # Imputation comes before the ablations: under FTMT the mean-imputed items fall below random (see README).
    blocks=[
        Block("table2-milk", ["MILK", "w/o both", "Random"], TABLE2_SETTINGS),
        Block("table2-baselines", ["BPR"], TABLE2_SETTINGS),
        Block("cost", ["MILK", "w/o both", "MILK sparse users"], ["FTMT"], experiment="cost", seeds=[2023]),
        Block("scaling", ["MILK", "MILK sparse users"], [f"x{s}" for s in SCALES], experiment="scaling",
              seeds=[2023], extra={"epochs": 5, "eval_step": 5}),
        Block("imputation", ["MILK zero-imputed", "MILK fusion=available"], ["FTMT", "MTMT"]),
        Block("ablations", ABLATIONS, ["FTMT", "FTFT"]),
        Block("curve", ["MILK", "w/o both"], [ratio_setting(r) for r in CURVE_RATIOS]),
        Block("tuned", [TUNED_VARIANT], ["FTMT", "MTMT"]),
        Block("sparse-users", ["MILK sparse users"], ["FTMT"]),  # what lazy Adam on the user table costs in accuracy
        # Three seeds and at most 100 epochs, to fit a 2-core CPU budget: nine models cost about as much as the rest
        # of the grid. Early stopping as everywhere else.
        Block("baselines", BASELINES, ["FTMT", "MTMT"], seeds=FULL_SEEDS[:3], extra={"epochs": 100}),
    ],
    # Cost: a fixed 20 epochs with one evaluation every 10, so both variants do the same work (scaling: 5 epochs).
    cost_overrides={"epochs": 20, "eval_step": 10, "stopping_step": 100},
    description="TikTok-sized: 5 seeds, every experiment",
    milk_pins={"tiktok": {"invariance_weight": 50.0, "align_weight": 0.5, "dirichlet_alpha": 0.1}},
)

QUICK = Profile(
    name="quick",
    seeds=[2023],
    base={"epochs": 10, "eval_step": 5, "stopping_step": 2},
    blocks=[
        Block("table2-milk", ["MILK", "w/o both"], ["FTMT", "FTFT"]),
        Block("table2-baselines", ["Random"], ["FTMT", "FTFT"]),
        Block("ablations", ["w/o CMAM"], ["FTMT", "FTFT"]),
        Block("curve", ["MILK", "w/o both"], [ratio_setting(r) for r in (0.0, 1.0)]),
        Block("cost", ["MILK", "w/o both"], ["FTMT"], experiment="cost"),
        Block("baselines", ["DUIF", "DropoutNet"], ["FTMT"]),  # one content-only, one two-stage
    ],
    cost_overrides={"epochs": 4, "eval_step": 2, "stopping_step": 100},
    pretrained_cf={"epochs": 10, "seed": 2023},
    description="smoke test on the embedded ml-100k-mm: 1 seed, 10 epochs, a few variants",
)

PROFILES = {"full": FULL, "quick": QUICK}


def expand(profile: Profile, blocks: Optional[List[str]] = None, tuned: Optional[Dict[str, Any]] = None,
           dataset: Optional[str] = None) -> List[Cell]:
    """The profile's cells in run order, without repeats (a cell named by two blocks runs once).

    Within a block the seed varies slowest, so an interrupted block has whole seeds of every variant.
    Cells of the tuned variant are left out while `tuned` (the tuning step's best parameters) is None.
    """
    chosen = [b for b in profile.blocks if blocks is None or b.name in blocks]
    if blocks is not None:
        unknown = set(blocks) - {b.name for b in profile.blocks}
        if unknown:
            raise ValueError(f"unknown block(s) {sorted(unknown)}; the {profile.name} profile has "
                             + ", ".join(b.name for b in profile.blocks))
    cells: List[Cell] = []
    seen = set()
    for block in chosen:
        for seed in block.seeds or profile.seeds:
            for setting in block.settings:
                for variant in block.variants:
                    if variant == TUNED_VARIANT:
                        if tuned is None:
                            continue
                        model, overrides = "MILK", dict(tuned)
                    else:
                        model, overrides = VARIANTS[variant]
                        overrides = dict(overrides)
                    if model == "MILK":
                        overrides = {**profile.milk_pins.get(dataset or "", {}), **overrides}
                    if block.experiment == "accuracy":
                        overrides = {**profile.base, **overrides}
                    else:
                        overrides = {**profile.cost_overrides, **overrides}
                    overrides.update(setting_overrides(setting))
                    overrides.update(block.extra)
                    cell = Cell(block.experiment, variant, setting, seed, model, tuple(sorted(overrides.items())))
                    if cell.key not in seen:
                        seen.add(cell.key)
                        cells.append(cell)
    return cells
