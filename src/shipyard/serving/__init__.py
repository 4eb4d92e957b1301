"""Serving: predictors behind the one Predictor contract (HTTP serving lands here next)."""
