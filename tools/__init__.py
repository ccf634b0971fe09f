"""Developer tools for the project (not part of the hmg_pipeline package)."""
