"""Dagster assets, one module per domain."""

import warnings

from dagster import BetaWarning

# BackfillPolicy is beta in this Dagster; its warning would repeat in every step's log (the
# sharded LLaVA assets and experiment_results set one).
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)
