"""The benchmark grid: variants as config overrides, experiments as (variants x settings) blocks, profiles.

A cell is one training run, keyed by (dataset, experiment, variant, setting, seed). Accuracy runs of every table
share the experiment "accuracy", so a cell such as (tiktok, MILK, FTMT, 2023) is trained once and read by every
table that shows it.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

# Variant name -> (model, config overrides). MILK is the paper's MILK with the dataset's paper weights
# (properties/dataset/<name>.yaml); its ablation switches and our options are options of recbole_milk MILK.
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "MILK": ("MILK", {}),
    "MILK recommended": ("MILK", {"preset": "recommended"}),
    "w/o both": ("MILK", {"use_alignment": False, "use_invariance": False}),
    "w/o CMAM": ("MILK", {"use_alignment": False}),
    "w/o CEIM": ("MILK", {"use_invariance": False}),
    "w/o e=0": ("MILK", {"include_equal_env": False}),
    "w/o cs": ("MILK", {"cyclic_shift": False}),
    "w/o random": ("MILK", {"resample_envs": False}),
    "MILK zero-imputed": ("MILK", {"imputation": "zero"}),
    "MILK mean reduction": ("MILK", {"env_loss_reduction": "mean"}),
    "MILK dense Adam": ("MILK", {"sparse_user_gradients": False}),
    # The preset was selected while dense Adam was MILK's default; this checks the optimiser under the preset.
    "MILK recommended dense Adam": ("MILK", {"preset": "recommended", "sparse_user_gradients": False}),
    "BPR": ("BPR", {}),
    "Random": ("Random", {}),
}
# Each option of ours alone, on top of the paper's MILK (what each buys and costs).
OPTION_VARIANTS = {
    "+ missing-aware training": {"modality_dropout": 0.3},
    "+ learned missing embedding": {"missing_modality": "learned"},
    "+ cross-modal imputation": {"missing_modality": "cross_modal"},
    "+ available fusion": {"fusion": "available"},
    "+ calibration": {"score_calibration": "pattern"},
    "+ MLP extractors": {"extractor_hidden_sizes": [256]},
}
VARIANTS.update({name: ("MILK", overrides) for name, overrides in OPTION_VARIANTS.items()})
# The recommended preset with the group-ratio target as a floor for every missing pattern on the validation
# ranking (trades accuracy).
PATTERN_FLOOR = "MILK recommended + pattern floor"
VARIANTS[PATTERN_FLOOR] = ("MILK", {"preset": "recommended", "calibration_min_pattern_ratio": 0.5})
# The paper's new-item baselines (recbole_milk/model/), each with its properties/model/<Model>.yaml defaults.
# DropoutNet, Heater, GAR and GoRec are two-stage: the runner pre-trains warm BPR embeddings once per grid.
BASELINES = ["DUIF", "VBPR", "MTPR", "DropoutNet", "Heater", "CLCRec", "CCFCRec", "GAR", "GoRec"]
VARIANTS.update({name: (name, {}) for name in BASELINES})

CURVE_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Experiments that measure time: a fixed number of epochs (the profile's cost_overrides) instead of early stopping.
TIMED_EXPERIMENTS = ("cost", "scaling")
SCALES = (1, 2, 4)
# The paper's scenario for M >= 3 modalities (section 5.3.1): 10% of new items complete, 45% miss one, 45% two.
THREE_WAY = "10/45/45"


def ratio_setting(ratio: float) -> str:
    """Setting name of a missing-ratio curve point. Ratio 0 is FTFT itself, so the curve reuses the FTFT cells."""
    return "FTFT" if ratio == 0 else f"test_missing={ratio:g}"


def setting_overrides(setting: str) -> Dict[str, Any]:
    """Config overrides of a setting name (FTFT / FTMT / MTMT, a curve point test_missing=R, 10/45/45)."""
    if setting in ("FTFT", "FTMT", "MTMT"):
        return {"missing_setting": setting}
    if setting.startswith("test_missing="):
        # Simulated masks at this ratio; the runner draws them with the cell's seed, so the curve averages over
        # mask draws, and masks are nested across ratios (recbole_milk/data/missing.py).
        return {"missing_setting": "FTMT", "test_missing_ratio": float(setting.split("=", 1)[1]),
                "missing_file": None}
    if setting == THREE_WAY:
        return {"missing_setting": "FTMT", "test_missing_ratio": 0.9, "missing_count_probs": [0.5, 0.5],
                "missing_file": None}
    if setting.startswith("x"):  # scaling rows: FTMT on the dataset duplicated N times, see benchmarks/scaling.py
        return {"missing_setting": "FTMT"}
    raise ValueError(f"unknown setting {setting!r}")


def masks_vary_with_seed(setting: str) -> bool:
    """Curve points average over mask draws: their masks follow the cell's seed, not the grid's split seed."""
    return setting.startswith("test_missing=")


@dataclass(frozen=True)
class Cell:
    dataset: str
    experiment: str
    variant: str
    setting: str
    seed: int
    model: str
    overrides: Tuple[Tuple[str, Any], ...] = ()

    @property
    def key(self) -> Tuple[str, str, str, str, int]:
        return (self.dataset, self.experiment, self.variant, self.setting, self.seed)

    @property
    def name(self) -> str:
        """A file-system safe name for the cell's scratch folder."""
        raw = f"{self.dataset}-{self.experiment}-{self.variant}-{self.setting}-{self.seed}"
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
    default_dataset: str
    description: str = ""
    # Stage 1 of the two-stage baselines: config overrides of the warm BPR run that exports their CF embeddings
    # (dataset_prep/export_cf_embeddings.py), on the grid's split.
    pretrained_cf: Dict[str, Any] = field(default_factory=lambda: {"epochs": 100, "seed": 2023})


FULL_SEEDS = [2023, 2024, 2025, 2026, 2027]
BASELINE_SEEDS = FULL_SEEDS[:3]
ABLATIONS = ["w/o CMAM", "w/o CEIM", "w/o e=0", "w/o cs", "w/o random"]
MAIN = ["MILK", "MILK recommended", "w/o both", "Random"]
# Three seeds and at most 100 epochs for the baselines, to fit a 2-core CPU budget: nine models cost about as much
# as the rest of the grid. Early stopping as everywhere else.
BASELINE_BLOCK = Block("baselines", BASELINES + ["BPR"], ["FTMT", "MTMT"], seeds=BASELINE_SEEDS,
                       extra={"epochs": 100})
OPTIONS_BLOCK = Block("options", list(OPTION_VARIANTS), ["FTMT"], seeds=BASELINE_SEEDS)

FULL = Profile(
    name="full",
    seeds=FULL_SEEDS,
    # Protocol of milk-spec.md section 3 as in properties/overall.yaml: evaluate every 10 epochs on valid NDCG@10,
    # stop after 3 evaluations without gain, at most 300 epochs.
    base={},
    # Ordered by importance: a partial grid still answers the first questions, and seeds are interleaved.
    blocks=[
        Block("main", MAIN, ["FTMT", "MTMT"]),
        BASELINE_BLOCK,
        # The authors' dense Adam on the user table against the default lazy Adam (the "MILK" cells of main).
        Block("optimiser", ["MILK dense Adam"], ["FTMT", "MTMT"]),
        Block("optimiser-recommended", ["MILK recommended dense Adam"], ["FTMT", "MTMT"], seeds=BASELINE_SEEDS),
        # The per-pattern floor, reported by missing count like the main rows.
        Block("floor", [PATTERN_FLOOR], ["FTMT", "MTMT"], seeds=BASELINE_SEEDS),
        # Which modality the missing-one items lack (TikTok: visual or acoustic), one group per pattern.
        Block("patterns", ["MILK", "MILK recommended", "w/o both", "DUIF", PATTERN_FLOOR], ["FTMT"],
              experiment="patterns", seeds=[2023], extra={"item_groups": "pattern"}),
        Block("robustness", MAIN, ["FTFT"]),
        Block("ablations", ABLATIONS + ["MILK mean reduction"], ["FTMT", "FTFT"]),
        OPTIONS_BLOCK,
        Block("curve", ["MILK", "MILK recommended", "w/o both"], [ratio_setting(r) for r in CURVE_RATIOS[1:]],
              seeds=BASELINE_SEEDS),
        Block("imputation", ["MILK zero-imputed"], ["FTMT", "MTMT"]),
        Block("cost", ["MILK", "w/o both", "MILK recommended", "MILK dense Adam"], ["FTMT"], experiment="cost",
              seeds=[2023]),
        Block("scaling", ["MILK", "MILK dense Adam"], [f"x{s}" for s in SCALES], experiment="scaling",
              seeds=[2023], extra={"epochs": 5, "eval_step": 5}),
    ],
    # Cost: a fixed 20 epochs with one evaluation every 10, so every variant does the same work (scaling: 5 epochs).
    cost_overrides={"epochs": 20, "eval_step": 10, "stopping_step": 100},
    default_dataset="tiktok",
    description="TikTok (reference split and masks): 5 seeds, every experiment",
)

# The same comparison on another dataset: the main rows, the baselines and our options one by one. ml-100k-mm has
# three modalities, so its profile also runs the paper's 10/45/45 scenario.
MULTI = Profile(
    name="multi",
    seeds=FULL_SEEDS,
    base={},
    blocks=[Block("main", MAIN, ["FTMT", "MTMT"]), BASELINE_BLOCK, OPTIONS_BLOCK],
    cost_overrides={"epochs": 20, "eval_step": 10, "stopping_step": 100},
    default_dataset="synthetic",
    description="another dataset (synthetic): 5 seeds for MILK, 3 for the baselines",
)
ML100K = Profile(
    name="ml100k",
    seeds=FULL_SEEDS,
    base={},
    blocks=[*MULTI.blocks,
            Block("three-way", ["MILK", "MILK recommended", "w/o both"], [THREE_WAY], seeds=BASELINE_SEEDS)],
    cost_overrides=MULTI.cost_overrides,
    default_dataset="ml-100k-mm",
    description="ml-100k-mm (three modalities): as multi, plus the paper's 10/45/45 scenario",
)

QUICK = Profile(
    name="quick",
    seeds=[2023],
    base={"epochs": 10, "eval_step": 5, "stopping_step": 2},
    blocks=[
        Block("main", ["MILK", "MILK recommended", "w/o both"], ["FTMT", "FTFT"]),
        Block("ablations", ["w/o CMAM"], ["FTMT", "FTFT"]),
        Block("curve", ["MILK", "w/o both"], [ratio_setting(r) for r in (0.0, 1.0)]),
        Block("cost", ["MILK", "w/o both"], ["FTMT"], experiment="cost"),
        Block("baselines", ["DUIF", "DropoutNet", "Random"], ["FTMT"]),  # one content-only, one two-stage
    ],
    cost_overrides={"epochs": 4, "eval_step": 2, "stopping_step": 100},
    pretrained_cf={"epochs": 10, "seed": 2023},
    default_dataset="ml-100k-mm",
    description="smoke test on the embedded ml-100k-mm: 1 seed, 10 epochs, a few variants",
)

PROFILES = {"full": FULL, "multi": MULTI, "ml100k": ML100K, "quick": QUICK}


def expand(profile: Profile, blocks: Optional[List[str]] = None, dataset: Optional[str] = None) -> List[Cell]:
    """The profile's cells in run order, without repeats (a cell named by two blocks runs once).

    Within a block the seed varies slowest, so an interrupted block has whole seeds of every variant.
    """
    dataset = dataset or profile.default_dataset
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
                    model, overrides = VARIANTS[variant]
                    timed = block.experiment in TIMED_EXPERIMENTS
                    overrides = dict(profile.cost_overrides if timed else profile.base, **overrides)
                    overrides.update(setting_overrides(setting))
                    overrides.update(block.extra)
                    cell = Cell(dataset, block.experiment, variant, setting, seed, model,
                                tuple(sorted(overrides.items())))
                    if cell.key not in seen:
                        seen.add(cell.key)
                        cells.append(cell)
    return cells
