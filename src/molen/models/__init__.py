"""Model packages: flavors (how each library's models become bytes), signatures, the reference
profile, the model card, and the predictor every loaded model becomes."""
