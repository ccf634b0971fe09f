"""hmg_pipeline: HMG-Emo (heterogeneous multimodal graph emotion prediction) as Dagster assets."""
