"""Hyper-parameter sweeps: Optuna studies whose trials are real ``polypseg fit`` runs."""
