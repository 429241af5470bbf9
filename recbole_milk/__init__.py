"""recbole-milk: multimedia new-item recommendation with missing modalities, as a RecBole plugin."""
from recbole_milk.integration import register, unregister

__version__ = "0.1.0"
__all__ = ["register", "unregister", "__version__"]
