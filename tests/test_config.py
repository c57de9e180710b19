"""Config: the shipped configuration says which of its values are the library's defaults; it ships
inside the package; typos and bad values are refused."""

import json
import re
import tomllib
from pathlib import Path

import pytest

from imgmiddleware import Config
from imgmiddleware.config import packaged_config_file

from .conftest import run_in_built_package

REPO = Path(__file__).resolve().parent.parent
PACKAGED = packaged_config_file()


def test_shipped_config_is_the_embedded_default():
    """What `imgmiddleware serve` changes on purpose from a bare ImageMiddleware(app): a disk cache,
    a demo key, the styles file beside the config, the '!' delimiter and the style viewer page."""
    shipped = Config.load(PACKAGED, environ={})
    assert shipped.replace(cache_dir="", credentials={}, styles_file="", style_delimiters="",
                           viewer_path="") == Config()
    assert shipped.viewer_path == "/_viewer/" and Config().viewer_path == ""
    assert shipped.cache_dir == ".cache/imgmiddleware"
    assert shipped.credentials == {"imgmw-demo-key": "imgmw-demo-secret"}
    assert Path(shipped.styles_file) == PACKAGED.parent / "styles.toml" and shipped.style_delimiters == "!"
    assert "oss-pic-style-w-100" in tomllib.loads(Path(shipped.styles_file).read_text())["all"]


def _toml_value(value) -> str:
    """How the shipped file spells a default in its "library default:" comments."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (dict, tuple, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return repr(value)


def _comments_above(text: str) -> dict[str, list[str]]:
    """Each top-level key (a ``key = ...`` line or a ``[key]`` table) -> the comment lines right above it."""
    found: dict[str, list[str]] = {}
    comments: list[str] = []
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        table = re.match(r"\[([A-Za-z_]+)[\].]", stripped)
        if table:
            found.setdefault(table.group(1), comments)
            in_table = True
        elif stripped and not in_table:
            found[stripped.split("=")[0].strip()] = comments
        comments = []
    return found


def test_every_key_is_the_library_default_or_says_what_that_is():
    """The file is the embedded default; the dataclass is the library's. Every key either has the
    library's value or a "library default: key = value" comment right above it naming the value
    (and no stale one when they agree), so the two cannot drift apart silently."""
    text = PACKAGED.read_text(encoding="utf-8")
    comments = _comments_above(text)
    library = Config()
    for key, value in tomllib.loads(text).items():
        default = getattr(library, key)
        marker = f"library default: {key} = {_toml_value(default)}"
        said = [line for line in comments[key] if "library default:" in line]
        if value == default:
            assert not said, f"{key} is the library default, yet the file says {said}"
        else:
            assert any(marker in line for line in said), \
                f"{key} = {value!r} differs from the library's {default!r}: add '# {marker}' above it"


def test_top_level_conf_is_the_packaged_default():
    """conf/ at the top of the repository is the operator's copy; imgmiddleware/conf/ is what ships
    and what `imgmiddleware serve` loads from any directory. Plain copies checked here, not symlinks:
    deploy/Containerfile COPYs conf/*.toml by name (container builders differ on a symlinked source),
    and a checkout without symlinks (Windows, some archives) would turn a link into a one-line file.
    Edit imgmiddleware/conf/ and copy it over."""
    for name in ("imgmiddleware.toml", "styles.toml"):
        assert (REPO / "conf" / name).read_bytes() == (PACKAGED.parent / name).read_bytes(), \
            f"conf/{name} differs from imgmiddleware/conf/{name}: cp imgmiddleware/conf/{name} conf/"


def test_the_packaged_default_is_package_data(tmp_path):
    """A built package (what a wheel holds) has the configuration and its styles, and finds them
    through importlib.resources from there, not from a source checkout."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from imgmiddleware.config import Config, "
             "packaged_config_file as p; c = Config.load(p(), environ={}); "
             "assert str(p()).startswith(sys.argv[1]), p(); print(open(c.styles_file).read())")
    out = run_in_built_package(tmp_path, probe)
    assert "oss-pic-style-w-100" in out


def test_styles_file_is_relative_to_the_config_file(tmp_path, monkeypatch):
    """A config file and the styles beside it work from any working directory; a path from the
    environment is the user's own, relative to where they are."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "c.toml").write_text('styles_file = "styles.toml"\ncache_dir = "cache"\n')
    monkeypatch.chdir(tmp_path)
    config = Config.load(Path("etc") / "c.toml", environ={})
    assert Path(config.styles_file) == folder / "styles.toml"
    assert config.cache_dir == "cache"                   # data stays relative to the working directory
    assert Config.load(Path("etc") / "c.toml", environ={"IMGMW_STYLES_FILE": "s.toml"}).styles_file == "s.toml"
    (folder / "abs.toml").write_text(f'styles_file = "{tmp_path / "x.toml"}"\n')
    assert Config.load(folder / "abs.toml", environ={}).styles_file == str(tmp_path / "x.toml")


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
