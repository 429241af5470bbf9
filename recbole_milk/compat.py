"""Safety nets for running RecBole 1.2.1 on today's packages, applied by the plugin's entry points only."""
import numpy as np

# RecBole 1.2.1 and ray read these aliases, which numpy 2 removed.
_NUMPY_ALIASES = {
    "bool": "bool_",
    "int": "int_",
    "float": "float64",
    "complex": "complex128",
    "object": "object_",
    "str": "str_",
    "long": "int_",
    "unicode": "str_",
    "float_": "float64",
    "complex_": "complex128",
    "unicode_": "str_",
    "bool8": "bool_",
}


def apply_numpy_aliases() -> None:
    """Define the removed numpy aliases RecBole and ray still use; a no-op where they exist."""
    for alias, target in _NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))
