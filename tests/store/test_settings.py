"""store.settings.Settings: the one record of how a video becomes the student's input.

What must hold: every file that records the settings reads back into the same Settings
(store.json, anchors.json's "settings", an export's w2s_vqa.json, old names included);
`check_fits` names every differing field with both values in one message; a field a
record lacks is not compared; the record a store keeps stays byte-for-byte what it was.
"""

import json

import pytest

from w2s_vqa import config as config_lib
from w2s_vqa.store.settings import CONFIG_FIELDS, Settings, SettingsError


def _defaults() -> Settings:
    return Settings.from_config(config_lib.defaults())


def test_a_config_gives_every_field_it_sets():
    settings = _defaults()
    data = config_lib.defaults().data
    assert list(settings.to_json()) == list(CONFIG_FIELDS)  # no SlowFast digest unless motion is SlowFast
    assert all(settings[k] == data[k] for k in CONFIG_FIELDS)


def test_the_records_read_back_into_the_same_settings():
    settings = _defaults()
    store_json = {"version": 2, **settings.to_json(), "distortions": "", "distort_seed": 0, "sources_per_shard": 8,
                  "num_shards": 1, "plan_digest": "x"}
    assert Settings.from_json(store_json) == settings  # the store's own keys are not settings
    assert Settings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    # An export written before w2s_vqa.json used the fields' names held the caps as decode_max_*.
    old_export = {k: v for k, v in settings.to_json().items() if not k.startswith("distort_max")}
    old_export.update(decode_max_side=settings.distort_max_side, decode_max_seconds=settings.distort_max_seconds,
                      sample_fps=1.0, pixel_mean=0.5)
    assert Settings.from_json(old_export) == settings


def test_check_fits_names_every_difference_with_both_values():
    mine = _defaults()
    theirs = Settings(**{**mine.to_json(), "motion_features": "none", "frame_format": "jpeg", "num_frames": 8})
    with pytest.raises(SettingsError) as e:
        mine.check_fits(theirs, mine="the student", theirs="the store", where="/data/store")
    message = str(e.value)
    assert message.startswith("/data/store: the store were made with other settings than the student reads: ")
    for entry in ("num_frames: 4 (the student) vs 8 (the store)",
                  "motion_features: 'frame_stats' (the student) vs 'none' (the store)",
                  "frame_format: 'raw' (the student) vs 'jpeg' (the store)"):
        assert entry in message
    assert "image_size" not in message and len(message.splitlines()) == 1
    mine.check_fits(mine)  # equal settings fit


def test_a_field_either_side_lacks_is_not_compared():
    full = _defaults()
    shapes = Settings(num_frames=full.num_frames, image_size=full.image_size)
    full.check_fits(shapes)
    shapes.check_fits(full)
    assert full.merged(Settings(slowfast_digest="abc")).slowfast_digest == "abc"
    assert shapes.merged(full) == full


def test_the_slowfast_digest_is_recorded_and_compared_for_slowfast_motion_only():
    slowfast = Settings(**{**_defaults().to_json(), "motion_features": "slowfast", "slowfast_digest": "aa"})
    assert slowfast.to_json()["slowfast_digest"] == "aa"
    with pytest.raises(SettingsError, match="slowfast_digest: 'aa' .* vs 'bb'"):
        slowfast.check_fits(Settings(**{**slowfast.to_json(), "slowfast_digest": "bb"}))
    moved = Settings(**{**slowfast.to_json(), "slowfast_weights": "/elsewhere/w.safetensors"})
    assert moved == slowfast and "slowfast_weights" not in moved.to_json()  # a moved file continues


def test_values_out_of_range_are_named():
    config = config_lib.defaults()
    config.data.frame_format = "png"
    config.data.jpeg_quality = 0
    with pytest.raises(SettingsError, match=r"data.frame_format .* not 'png'; data.jpeg_quality must be in 1..100"):
        Settings.from_config(config)


def test_settings_apply_to_a_config():
    config = config_lib.defaults()
    Settings(num_frames=8, motion_features="none").apply_to(config)
    assert (config.data.num_frames, config.data.motion_features, config.data.image_size) == (8, "none", 32)


def test_an_export_records_the_settings_and_a_re_export_keeps_an_older_exports():
    """export_files.input_settings writes Settings' fields; re-exporting a directory whose
    w2s_vqa.json used the older decode_max_* names (convert.hf reads it through
    data_of_settings) keeps every value under the fields' names."""
    from w2s_vqa.convert import export_files
    from w2s_vqa.models import config as model_config

    cfg = model_config.preset("tiny")
    older = {"num_frames": 4, "image_size": 32, "motion_features": "frame_stats", "frame_format": "jpeg",
             "jpeg_quality": 90, "decode_max_side": 640, "decode_max_seconds": 7.5, "sample_fps": 1.0}
    written = export_files.input_settings(cfg, export_files.data_of_settings(older))
    assert {k: written[k] for k in ("frame_format", "jpeg_quality", "distort_max_side", "distort_max_seconds")} == {
        "frame_format": "jpeg", "jpeg_quality": 90, "distort_max_side": 640, "distort_max_seconds": 7.5}
    assert "decode_max_side" not in written
    assert Settings.from_json(written) == Settings.from_json(older).merged(Settings.from_student(cfg))


def test_a_record_without_frame_times_reads_as_the_centered_default():
    """store.json, anchors.json or w2s_vqa.json written before data.frame_times was recorded:
    their frames were taken at (k + 0.5) s, the only rule then; a partial record (no
    num_frames, e.g. an export's motion kind alone) leaves it unrecorded."""
    settings = _defaults()
    assert settings.frame_times == "centered" == config_lib.defaults().data.frame_times
    old = {k: v for k, v in settings.to_json().items() if k != "frame_times"}
    assert Settings.from_json(old) == settings
    assert Settings.from_json({"motion_features": "precomputed"}).frame_times is None
    released = Settings(**{**settings.to_json(), "frame_times": "released"})
    with pytest.raises(SettingsError, match=r"frame_times: 'released' \(the config\) vs 'centered' \(the store\)"):
        released.check_fits(Settings.from_json(old), mine="the config", theirs="the store")
