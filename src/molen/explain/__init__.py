"""Explanations: per-row SHAP attributions (:mod:`.shapley`)."""
