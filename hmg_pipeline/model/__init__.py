"""HMG-Emo model and training (no Dagster import)."""
