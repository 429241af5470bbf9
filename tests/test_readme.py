"""The README must stay true: every option the plugin declares is documented, and the quick start matches CI."""
import re
from pathlib import Path

import yaml

from recbole_milk.option_docs import option_tables, read_options_file, splice

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _declared_keys(path: Path) -> set:
    return set((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).keys())


def test_every_overall_and_model_option_is_documented():
    files = [REPO / "properties" / "overall.yaml", *sorted((REPO / "properties" / "model").glob("*.yaml"))]
    missing = {f"{path.name}: {key}" for path in files for key in _declared_keys(path) if f"`{key}`" not in README}
    assert not missing, f"document these options in README.md: {sorted(missing)}"


def test_the_option_tables_are_the_ones_generated_from_the_yaml_files():
    assert splice(README, option_tables(REPO / "properties")) == README, (
        "README.md's option tables are stale: run python -m recbole_milk.option_docs --readme=README.md")


def test_every_option_line_of_the_yaml_files_says_what_it_does():
    files = [REPO / "properties" / "overall.yaml", *sorted((REPO / "properties" / "model").glob("*.yaml"))]
    for path in files:
        for key, _, meaning in read_options_file(path)[1]:
            assert meaning, f"{path.name}: option {key} has no comment saying what it does"


def test_quick_start_commands_are_the_ones_ci_runs():
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, flags=re.S).group(1).strip().splitlines()
    assert len(block) == 2, "the quick start is exactly two commands"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    install = block[0].split(" && ")[0]
    assert install in ci and "python run_recbole_milk.py" in ci
    assert block[1] in ci
