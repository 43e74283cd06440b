"""Validation, estimation and editing (VEE) of collected reads: rules, estimators, runner."""
