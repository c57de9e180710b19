"""Which font file draws each of OSS's seven font names: real font files, never faces compiled into
an imaging library (OpenCV 5.1 dropped its built-in CJK face without a word, issue 14).

Each OSS name has an ordered list of candidate faces, a file name plus the family inside it (a .ttc
collection holds several faces: Noto Sans CJK's has JP, KR, SC, TC, HK and the Mono ones). A
candidate is looked for in the operator's ``font_dirs``, then the standard system font directories.
Every list ends with Noto Sans CJK SC, which the ``noto-cjk-sans-otc`` package installs with
imgmiddleware (the same file, byte for byte, as Debian's fonts-noto-cjk), so a pip-only machine still
draws Chinese. ``fonts`` in the config overrides a name with a file of the operator's choice.

Resolution reads only file names and name tables (about 0.1 s). Which characters a face covers (its
cmap, 0.05-0.1 s to read) is read on first use and kept as a sorted array of code points (about
180 KB a face), so text a face cannot draw is never drawn as empty boxes: another face that covers it
is used, or the request is refused (ops/watermark.py). At startup only the operator's own faces are
checked for Chinese glyphs; the candidates below are CJK faces by name.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import logging
import os
import sys
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("imgmiddleware.fonts")

FONT_SUFFIXES = (".ttf", ".ttc", ".otf", ".otc")
# Common simplified Chinese characters every face serving an OSS name must have; a face without them
# would draw boxes for ordinary watermark text.
CJK_PROBE = "图片服务水印文字中国的一是了我不人在有"


@dataclass(frozen=True)
class Candidate:
    """A face to look for: a file name (case-insensitive) and the family inside it."""
    file: str
    family: str
    source: str          # where it comes from, for the log: a Debian package, or the pip package


NOTO_SANS_SC = Candidate("NotoSansCJK-Regular.ttc", "Noto Sans CJK SC",
                         "fonts-noto-cjk, or the noto-cjk-sans-otc package installed with imgmiddleware")

# OSS's names (spec §5.14) -> the closest free faces, best first (docs/COMPATIBILITY.md says why).
CANDIDATES: dict[str, tuple[Candidate, ...]] = {
    "wqy-zenhei": (Candidate("wqy-zenhei.ttc", "WenQuanYi Zen Hei", "fonts-wqy-zenhei"),),
    "wqy-microhei": (Candidate("wqy-microhei.ttc", "WenQuanYi Micro Hei", "fonts-wqy-microhei"),),
    "droidsansfallback": (Candidate("DroidSansFallbackFull.ttf", "Droid Sans Fallback",
                                    "fonts-droid-fallback"),),
    # FZ ShuSong is a book Song (Ming) face: Noto Serif CJK SC is the free Song face of its kind.
    "fangzhengshusong": (Candidate("NotoSerifCJK-Regular.ttc", "Noto Serif CJK SC", "fonts-noto-cjk"),),
    # FZ KaiTi is a brush Kai face: AR PL UKai CN is the free Kai face with simplified characters.
    "fangzhengkaiti": (Candidate("ukai.ttc", "AR PL UKai CN", "fonts-arphic-ukai"),),
    # FZ HeiTi is a heavy Hei (sans) face: Noto Sans CJK SC Bold.
    "fangzhengheiti": (Candidate("NotoSansCJK-Bold.ttc", "Noto Sans CJK SC", "fonts-noto-cjk"),),
    # FZ FangSong is a light, even-stroked Song: AR PL UMing CN (a light Ming face) is the nearest
    # free face with simplified characters; there is no free simplified FangSong.
    "fangzhengfangsong": (Candidate("uming.ttc", "AR PL UMing CN", "fonts-arphic-uming"),
                          Candidate("NotoSerifCJK-Regular.ttc", "Noto Serif CJK SC", "fonts-noto-cjk")),
}
FONT_NAMES = tuple(CANDIDATES)
DEFAULT_FONT = "wqy-zenhei"


def system_font_dirs() -> list[Path]:
    """The standard font directories of Linux (fontconfig's defaults), macOS and Windows."""
    home = Path.home()
    dirs = [Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share")) / "fonts", home / ".fonts"]
    for data in os.environ.get("XDG_DATA_DIRS", "/usr/local/share:/usr/share").split(":"):
        if data:
            dirs.append(Path(data) / "fonts")
    dirs += [Path("/usr/share/fonts"), Path("/usr/local/share/fonts")]
    if sys.platform == "darwin":
        dirs += [home / "Library" / "Fonts", Path("/Library/Fonts"), Path("/System/Library/Fonts")]
    if sys.platform == "win32":
        dirs.append(Path(os.environ.get("WINDIR", "C:\\Windows")) / "Fonts")
    return list(dict.fromkeys(dirs))


def packaged_font_dirs() -> list[Path]:
    """The folder of the pip-installed Noto Sans CJK collection, when it is installed."""
    spec = importlib.util.find_spec("noto_cjk_sans_otc")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


@dataclass(frozen=True)
class Face:
    """One face of one font file: what FreeType opens (path + index inside a collection)."""
    path: str
    index: int
    family: str
    style: str

    def __str__(self) -> str:
        where = f"{self.path}#{self.index}" if self.path.lower().endswith((".ttc", ".otc")) else self.path
        return f"{where} ({self.family} {self.style})"


def _faces_of(path: Path) -> list[Face]:
    """Every face in a font file, with its family and style names, from the name tables only."""
    from fontTools.ttLib import TTCollection, TTFont

    try:
        if path.suffix.lower() in (".ttc", ".otc"):
            fonts = TTCollection(str(path), lazy=True).fonts
        else:
            fonts = [TTFont(str(path), lazy=True)]
        faces = []
        for index, font in enumerate(fonts):
            names = font["name"]
            faces.append(Face(str(path), index, names.getBestFamilyName() or path.stem,
                              names.getBestSubFamilyName() or ""))
        return faces
    except Exception as err:   # a damaged or foreign file in a font folder must not stop the server
        log.warning("fonts: cannot read %s: %s", path, err)
        return []


def _index_files(dirs: list[Path]) -> dict[str, Path]:
    """Lower-case file name -> first path with that name, walking ``dirs`` in order."""
    found: dict[str, Path] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                if name.lower().endswith(FONT_SUFFIXES):
                    found.setdefault(name.lower(), Path(root) / name)
    return found


def _pick(faces: list[Face], family: str) -> Face | None:
    for face in faces:
        if face.family == family:
            return face
    return None


def parse_override(value: str) -> tuple[Path, int | None]:
    """``fonts`` config values: "path" or "path#N" (face N of a collection)."""
    path, sep, index = value.rpartition("#")
    if sep and index.isdigit():
        return Path(path), int(index)
    return Path(value), None


class Coverage:
    """The code points a face has glyphs for, as a sorted array (compact, bisect to look up)."""

    def __init__(self, face: Face) -> None:
        from fontTools.ttLib import TTCollection, TTFont

        if face.path.lower().endswith((".ttc", ".otc")):
            font = TTCollection(face.path, lazy=True).fonts[face.index]
        else:
            font = TTFont(face.path, lazy=True)
        self.points = array("I", sorted((font.getBestCmap() or {}).keys()))

    def __contains__(self, char: str) -> bool:
        point = ord(char)
        at = bisect.bisect_left(self.points, point)
        return at < len(self.points) and self.points[at] == point

    def missing(self, text: str) -> list[str]:
        return [c for c in dict.fromkeys(text) if not c.isspace() and c not in self]


@dataclass
class FontTable:
    """OSS font name -> the face that draws it, resolved once per process and configuration."""
    faces: dict[str, Face | None]
    fallback: Face | None = None                                # Noto Sans CJK SC, when found
    substitutes: dict[str, str] = field(default_factory=dict)   # name -> the closer face to install
    overridden: set = field(default_factory=set)               # names the config's ``fonts`` set
    _coverage: dict[Face, Coverage] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def coverage(self, face: Face) -> Coverage:
        cov = self._coverage.get(face)
        if cov is None:
            with self._lock:
                cov = self._coverage.get(face)
                if cov is None:
                    cov = self._coverage[face] = Coverage(face)
        return cov

    def chain(self, name: str) -> list[Face]:
        """The faces that may draw text of OSS font ``name``, in order: its own face, then Noto Sans
        CJK SC, then the other names' faces. Droid Sans Fallback, for one, has no Latin letters."""
        fallback = self.fallback
        ordered = [self.faces.get(name), fallback] + [self.faces.get(n) for n in FONT_NAMES]
        return list(dict.fromkeys(face for face in ordered if face is not None))

    def runs(self, name: str, text: str) -> tuple[list[tuple[Face, str]], list[str]]:
        """``text`` cut into runs, each drawn by the first face of the name's chain that has all of
        its characters (as browsers and fontconfig fall back), and the characters no face has.
        Spaces go with the run before them."""
        chain = self.chain(name)
        runs: list[tuple[Face, str]] = []
        missing: list[str] = []
        for char in text:
            face = None
            if char.isspace() and runs:
                face = runs[-1][0]
            else:
                for candidate in chain:
                    if char.isspace() or char in self.coverage(candidate):
                        face = candidate
                        break
            if face is None:
                if char not in missing:
                    missing.append(char)
                continue
            if runs and runs[-1][0] == face:
                runs[-1] = (face, runs[-1][1] + char)
            else:
                runs.append((face, char))
        return runs, missing

    @property
    def fingerprint(self) -> str:
        """Changes when any name is drawn by another face, so cached text watermarks follow a font
        install (it goes into the result cache key). Made of what the files hold, not where they
        are or when they were written, so nodes installed apart with the same font packages share
        results (issue 16): each file's size and a digest of its first and last 64 KiB."""
        parts = []
        for name in FONT_NAMES:
            face = self.faces.get(name)
            parts.append(f"{name}=" + (f"{_content_id(face.path)}#{face.index}" if face else ""))
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]

    def report(self) -> list[tuple[int, str]]:
        """(logging level, line) for each name: which file serves it, what a closer face would be,
        and a loud warning where the face has no Chinese glyphs or nothing serves the name."""
        lines = []
        for name in FONT_NAMES:
            face = self.faces.get(name)
            if face is None:
                lines.append((logging.ERROR,
                              f"fonts: NO FONT FILE serves {name}: text watermarks with type {name} "
                              f"are refused. Install {CANDIDATES[name][0].source} or set fonts/font_dirs."))
                continue
            line = f"fonts: {name} -> {face}"
            if name in self.substitutes:
                line += f"; a closer face: {self.substitutes[name]}"
            lines.append((logging.INFO, line))
            if name not in self.overridden:   # our candidates are CJK faces; an operator's may not be
                continue
            missing = self.coverage(face).missing(CJK_PROBE)
            if missing:
                lines.append((logging.ERROR,
                              f"fonts: {face} HAS NO CHINESE GLYPHS ({''.join(missing)}): Chinese text "
                              f"of type {name} is drawn by another face or refused. Install "
                              f"{NOTO_SANS_SC.source}."))
        return lines

    def log_report(self) -> None:
        for level, line in self.report():
            log.log(level, "%s", line)


def resolve(font_dirs: tuple[str, ...] = (), overrides: dict | None = None,
            search_system: bool = True, search_packaged: bool = True) -> FontTable:
    """Map every OSS font name to a face: an override, else its candidates in ``font_dirs``, the
    system font directories and the packaged Noto Sans CJK, else Noto Sans CJK SC from those."""
    overrides = overrides or {}
    dirs = [Path(d) for d in font_dirs]
    if search_system:
        dirs += system_font_dirs()
    if search_packaged:
        dirs += packaged_font_dirs()
    files = _index_files(dirs)
    faces_cache: dict[Path, list[Face]] = {}

    def faces_in(path: Path) -> list[Face]:
        if path not in faces_cache:
            faces_cache[path] = _faces_of(path)
        return faces_cache[path]

    def find(candidate: Candidate) -> Face | None:
        path = files.get(candidate.file.lower())
        return _pick(faces_in(path), candidate.family) if path is not None else None

    fallback = find(NOTO_SANS_SC)
    table = FontTable({}, fallback)
    for name in FONT_NAMES:
        if name in overrides:
            path, index = parse_override(str(overrides[name]))
            if not path.is_file():
                raise ValueError(f"config fonts.{name}: no font file at {path}")
            faces = faces_in(path)
            if index is None:
                index = 0
            if not 0 <= index < len(faces):
                raise ValueError(f"config fonts.{name}: {path} has {len(faces)} faces, no #{index}")
            table.faces[name] = faces[index]
            table.overridden.add(name)
            continue
        face = None
        for candidate in CANDIDATES[name]:
            face = find(candidate)
            if face is not None:
                break
        if face is None:
            face = fallback
            if face is not None:
                best = CANDIDATES[name][0]
                table.substitutes[name] = f"{best.family} (Debian: {best.source})"
        table.faces[name] = face
    return table


_tables: dict[tuple, FontTable] = {}
_tables_lock = threading.Lock()


def font_table(font_dirs=(), overrides: dict | None = None) -> FontTable:
    """The process's FontTable for a configuration, resolved (and its report logged) once."""
    key = (tuple(font_dirs), tuple(sorted((overrides or {}).items())))
    table = _tables.get(key)
    if table is None:
        with _tables_lock:
            table = _tables.get(key)
            if table is None:
                table = _tables[key] = resolve(tuple(font_dirs), overrides)
                table.log_report()
    return table


def font_table_for(config) -> FontTable:
    return font_table(tuple(config.font_dirs), dict(config.fonts))


def _content_id(path: str, edge: int = 64 * 1024) -> str:
    """A font file's identity by content: its size and a digest of its two ends (a whole Noto CJK
    collection would take 0.1 s to hash; a different release differs in its tables at both ends)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha1(fh.read(edge))
        if size > edge:
            fh.seek(max(edge, size - edge))
            digest.update(fh.read(edge))
    return f"{size}:{digest.hexdigest()[:16]}"
