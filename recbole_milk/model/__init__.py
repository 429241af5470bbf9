"""The plugin's model layer: the bases (abstract_recommender), shared layers and losses, the models under
general_recommender/, and the registry of model names (registry)."""
