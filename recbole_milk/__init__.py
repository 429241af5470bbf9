"""recbole-milk: multimedia new-item recommendation with missing modalities, as a RecBole plugin."""
__version__ = "0.1.0"
