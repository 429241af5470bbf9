"""The plugin's models, one module per model (RecBole's layout): MILK and the new-item baselines."""
