"""Predict emotions from the command line, with the stored ``trained_model`` and ``hetero_graph``:

    python -m hmg_pipeline.predict USER_ID IMAGE_ID [USER_ID IMAGE_ID ...] [--store DIR]

Prints, per pair, what the ``predictions`` asset stores: the status (ok, unknown_user,
unknown_image, unknown_user_and_image), the most likely emotion, the eight class probabilities
and beta (Eq. 5). The store is ``HMG_STORE_DIR`` (default data/store) unless ``--store`` is given.
The artifacts are read from ``HMG_ARTIFACTS_URL`` when it is set (a directory or an fsspec URL
such as s3://bucket/prefix), else from the store; with ``--store``, from that store.
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from hmg_pipeline.resources import PipelinePaths, SettingError


def parse_pairs(values: list[str]) -> list[tuple[str, str]]:
    if not values or len(values) % 2:
        raise SystemExit("give pairs: USER_ID IMAGE_ID [USER_ID IMAGE_ID ...]")
    return list(zip(values[::2], values[1::2], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hmg_pipeline.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("ids", nargs="*", metavar="USER_ID IMAGE_ID", help="pairs to predict")
    parser.add_argument("--store", help="the store directory (default: HMG_STORE_DIR)")
    args = parser.parse_args(argv)
    pairs = parse_pairs(args.ids)
    paths = PipelinePaths(store_dir=args.store) if args.store else PipelinePaths.from_env()
    from hmg_pipeline.core.locations import load_torch, shown
    from hmg_pipeline.model.predict import load_trained_model, predict_pairs

    try:
        graph_file = paths.artifact("hetero_graph")  # HMG_ARTIFACTS_URL, else the store
    except SettingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        trained = load_trained_model(paths.artifact("trained_model"))
        if not graph_file.is_file():
            raise FileNotFoundError(
                f"{shown(graph_file)} does not exist: materialise hetero_graph first"
            )
    except FileNotFoundError as error:
        print(f"error: {error} (e.g. `make demo`)", file=sys.stderr)
        return 1
    graph = load_torch(graph_file)
    table = predict_pairs(trained, graph, pairs)
    with pl.Config(tbl_rows=len(pairs), tbl_cols=-1, tbl_width_chars=200, float_precision=3):
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
