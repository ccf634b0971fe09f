"""Environment settings: parsed in one place (resources.SETTINGS) with their allowed ranges; a bad
value names the variable and what is allowed, and fails only the steps that use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetSelection, materialize

from hmg_pipeline.definitions import all_assets, all_checks, build_resources
from hmg_pipeline.resources import (
    DEFAULT_RECHECK_CRON,
    SETTINGS,
    ComputeResource,
    FlickrResource,
    PipelinePaths,
    SettingError,
    env_setting,
    flickr_recheck_cron,
)

from .helpers import TinyDataset

BAD_VALUES = [
    ("FLICKR_MAX_QPS", "abc"),
    ("FLICKR_MAX_QPS", "nan"),
    ("FLICKR_MAX_QPS", "inf"),
    ("FLICKR_MAX_QPS", "0"),
    ("FLICKR_MAX_QPS", "-1"),
    ("HMG_FLICKR_RECHECK_DAYS", "abc"),
    ("HMG_FLICKR_RECHECK_DAYS", "-1"),
    ("HMG_FLICKR_RECHECK_DAYS", "nan"),
    ("HMG_FLICKR_RECHECK_CRON", "every sunday"),
    ("FLICKR_API_URL", "api.flickr.com/services/rest/"),
    ("HMG_OLLAMA_URL", "ftp://localhost:11434"),
    ("HMG_DEVICE", "gpu"),
    ("HMG_AMP", "maybe"),
    ("HMG_ENCODERS", "clip"),
    ("HMG_LLAVA_BACKEND", "vllm-direct"),
    ("HMG_ARTIFACTS_URL", "nosuchproto://bucket/prefix"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_value_names_the_variable_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as error:
        env_setting(name)
    message = str(error.value)
    assert message.startswith(f"{name}={value!r} is not allowed")
    assert SETTINGS[name].allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLICKR_MAX_QPS", " 2.5 ", 2.5),
        ("HMG_FLICKR_RECHECK_DAYS", "0", 0.0),
        ("HMG_AMP", "off", False),
        ("HMG_AMP", "Yes", True),
        ("HMG_DEVICE", "CUDA:1", "cuda:1"),
        ("HMG_ENCODERS", "Paper", "paper"),
        ("HMG_FLICKR_RECHECK_CRON", "0 4 * * 1", "0 4 * * 1"),
    ],
)
def test_good_values_are_parsed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    assert env_setting(name) == expected


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_unset_or_blank_gives_the_default(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv(name, raising=False)
    unset = env_setting(name)
    monkeypatch.setenv(name, "  ")
    assert env_setting(name) == unset == SETTINGS[name].parse(SETTINGS[name].default)


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    undocumented = [name for name in SETTINGS if f"`{name}`" not in readme]
    assert not undocumented


def test_config_from_the_ui_is_range_checked_too() -> None:
    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match="max_qps"):
            FlickrResource(max_qps=bad)
    with pytest.raises(ValueError, match="recheck_after_days"):
        FlickrResource(recheck_after_days=-1)


def test_a_bad_cron_keeps_the_default_so_the_location_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HMG_FLICKR_RECHECK_CRON", "every sunday")
    assert flickr_recheck_cron() == DEFAULT_RECHECK_CRON


def test_the_code_location_loads_with_bad_settings(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FLICKR_MAX_QPS": "abc",
        "HMG_FLICKR_RECHECK_DAYS": "-1",
        "HMG_FLICKR_RECHECK_CRON": "every sunday",
        "HMG_ENCODERS": "clip",
        "HMG_ARTIFACTS_URL": "nosuchproto://bucket/prefix",
        "HMG_STORE_DIR": str(tmp_path / "store"),
    }
    script = (
        "from hmg_pipeline.definitions import defs\n"
        "print(len(list(defs.resolve_asset_graph().get_all_asset_keys())))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 20


def test_only_the_steps_that_use_a_bad_setting_fail(
    monkeypatch: pytest.MonkeyPatch, tiny: TinyDataset
) -> None:
    monkeypatch.setenv("FLICKR_MAX_QPS", "nan")
    resources = build_resources(
        PipelinePaths(raw_dir=str(tiny.raw_dir), store_dir=str(tiny.store_dir)),
        ComputeResource(device="cpu"),
    )
    offline = materialize(
        [*all_assets, *all_checks],
        selection=AssetSelection.assets("valid_views").upstream(),
        resources=resources,
    )
    assert offline.success
    online = materialize(
        [*all_assets, *all_checks],
        selection=AssetSelection.assets("flickr_comments"),
        resources=resources,
        raise_on_error=False,
    )
    assert not online.success
    errors = [
        event.event_specific_data.error.to_string()
        for event in online.all_events
        if getattr(event.event_specific_data, "error", None) is not None
    ]
    assert any("FLICKR_MAX_QPS='nan' is not allowed: use a number > 0" in e for e in errors)
    assert "flickr_comments" not in [
        m.asset_key.to_user_string() for m in online.get_asset_materialization_events()
    ]


def test_a_bad_cron_fails_the_schedule_tick_with_its_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster import build_schedule_context

    from hmg_pipeline.assets.flickr import refresh_dead_flickr_content

    monkeypatch.setenv("HMG_FLICKR_RECHECK_CRON", "every sunday")
    with pytest.raises(SettingError, match="HMG_FLICKR_RECHECK_CRON='every sunday'"):
        refresh_dead_flickr_content(build_schedule_context())
    monkeypatch.setenv("HMG_FLICKR_RECHECK_CRON", "0 4 * * 1")
    monkeypatch.setenv("HMG_FLICKR_RECHECK_DAYS", "nan")
    with pytest.raises(SettingError, match="HMG_FLICKR_RECHECK_DAYS='nan'"):
        refresh_dead_flickr_content(build_schedule_context())


def raw_views_on(raw_dir: Path, store_dir: Path):
    """Materialise raw_views with these paths, failures returned rather than raised."""
    resources = build_resources(
        PipelinePaths(raw_dir=str(raw_dir), store_dir=str(store_dir)),
        ComputeResource(device="cpu"),
    )
    return materialize(
        [*all_assets, *all_checks],
        selection=AssetSelection.assets("raw_views"),
        resources=resources,
        raise_on_error=False,
    )


def step_errors(result) -> list[str]:
    return [
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if getattr(event.event_specific_data, "error", None) is not None
    ]


def test_the_code_location_loads_with_an_unusable_store_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """Loading the definitions must not touch the disk: a store that cannot be created (a
    file in the way) would otherwise stop the whole code location."""
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    script = (
        "from hmg_pipeline.definitions import defs\n"
        "print(len(list(defs.resolve_asset_graph().get_all_asset_keys())))"
    )
    for store in (afile, tmp_path / "new" / "store"):
        env = {**os.environ, "HMG_STORE_DIR": str(store), "HMG_RAW_DIR": str(tmp_path / "none")}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "new").exists() and not (tmp_path / "none").exists()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_unusable_store_fails_the_steps_with_one_line(
    tiny: TinyDataset, tmp_path: Path, where: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    store = afile if where == "file" else afile / "store"
    result = raw_views_on(tiny.raw_dir, store)
    assert not result.success
    expected = f"SettingError: HMG_STORE_DIR={str(store)!r} is not a writable directory ("
    lines = [line for error in step_errors(result) for line in error.splitlines()]
    assert any(expected in line and line.endswith(")") for line in lines), lines
    with pytest.raises(SettingError, match=r"^HMG_STORE_DIR=.* is not a writable directory"):
        PipelinePaths.create_store(str(store))


@pytest.mark.parametrize(
    ("kind", "state"), [("missing", "does not exist"), ("file", "is not a directory")]
)
def test_an_unusable_raw_dir_fails_where_the_tables_are_read(
    tiny: TinyDataset, tmp_path: Path, kind: str, state: str
) -> None:
    raw = tmp_path / "missing"
    if kind == "file":
        raw = tmp_path / "afile"
        raw.write_text("x", encoding="utf-8")
    result = raw_views_on(raw, tiny.store_dir)
    assert not result.success
    expected = f"hmg_pipeline.resources.SettingError: HMG_RAW_DIR={str(raw)!r} {state}"
    lines = [line for error in step_errors(result) for line in error.splitlines()]
    assert expected in lines, lines


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("store", "reason"),
    [
        ("/proc/hmg/store", "(No such file or directory: /proc/hmg"),
        ("/proc", "(cannot create a file in /proc: "),
    ],
)
def test_a_store_on_a_virtual_file_system_is_refused(store: str, reason: str) -> None:
    with pytest.raises(SettingError) as error:
        PipelinePaths(store_dir=store).store_path  # noqa: B018 (the property creates the store)
    message = str(error.value)
    assert message.startswith(f"HMG_STORE_DIR={store!r} is not a writable directory {reason}")
    assert "\n" not in message and "tmp" not in message


def test_the_executor_setting_picks_in_process_or_multiprocess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster import in_process_executor

    from hmg_pipeline.storage import executor_from_env, multiprocess

    monkeypatch.setenv("HMG_EXECUTOR", "in_process")
    assert executor_from_env() is in_process_executor
    monkeypatch.delenv("HMG_EXECUTOR")
    assert executor_from_env() is multiprocess
    monkeypatch.setenv("HMG_EXECUTOR", "threads")
    with pytest.warns(UserWarning, match="HMG_EXECUTOR='threads' is not allowed"):
        assert executor_from_env() is multiprocess
