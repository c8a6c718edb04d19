"""Hyperparameter sweeps searched by Optuna: the search space (space), the study and its resume (study),
the sweep job (runner). Import each name from the module that defines it."""
