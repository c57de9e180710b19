"""Config: the shipped conf/ file documents the real defaults; typos and bad values are refused."""

from pathlib import Path

import pytest

from imgmiddleware import Config

CONF = Path(__file__).resolve().parent.parent / "conf" / "imgmiddleware.toml"


def test_shipped_config_file_states_the_defaults():
    """conf/ documents every default; what it changes on purpose is the embedded default's: a disk
    cache, a demo key, the styles file, the '!' delimiter and the style viewer page (a library user
    gets none of these unless they ask)."""
    shipped = Config.load(CONF, environ={})
    assert shipped.replace(cache_dir="", credentials={}, styles_file="", style_delimiters="",
                           viewer_path="") == Config()
    assert shipped.viewer_path == "/_viewer/" and Config().viewer_path == ""
    assert shipped.cache_dir == ".cache/imgmiddleware"
    assert shipped.credentials == {"imgmw-demo-key": "imgmw-demo-secret"}
    assert shipped.styles_file == "conf/styles.toml" and shipped.style_delimiters == "!"


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("jpeg_quality = 70\nshrink_on_load = true\n")
    config = Config.load(path, environ={"IMGMW_JPEG_QUALITY": "80", "IMGMW_SHRINK_ON_LOAD": "false"})
    assert config.jpeg_quality == 80 and config.shrink_on_load is False


def test_unknown_keys_and_bad_values_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("jpeg_qualty = 70\n")
    with pytest.raises(ValueError, match="jpeg_qualty"):
        Config.load(path, environ={})
    with pytest.raises(ValueError):
        Config(jpeg_quality=0)
    with pytest.raises(ValueError):
        Config(max_source_bytes=-1)
