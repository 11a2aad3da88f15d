"""Areas by the names people use: GeoNames' admin codes ("CD.11") become names ("Nord-Kivu").

An area is stored and shown as its canonical name. What people type for one — a name, another
spelling ("North Kivu", "Nord Kivu"), or a GeoNames code ("CD.11", "11") — is read as that name.
The names come from GeoNames' admin1/admin2 files (shipped for every country's provinces and for
the districts of DR Congo, the Central African Republic and Mali; a full file can be imported),
from `data/area_names.tsv` (the names in use where GeoNames' differs), and from the admin1/admin2
names of the network's own gazetteer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from keywords.grammar import fold

ADMIN_COLUMNS = 4  # code, name, ASCII name, geonameid
MAX_NAME = 120  # the width of an area column (places.admin1, people.area)
_ADMIN1_CODE = re.compile(r"^[A-Z]{2}\.[^.\s]+$")
_ADMIN2_CODE = re.compile(r"^[A-Z]{2}\.[^.\s]+\.[^.\s]+$")


class AreaFileError(ValueError):
    """An admin code file that cannot be loaded: names the file, row and column."""

    def __init__(self, path: str, row: int, column: str, reason: str) -> None:
        super().__init__(f"{path}: row {row}, column {column}: {reason}")


def normalize_name(name: str) -> str:
    """The form names of places and areas are compared in: folded, separators made single spaces."""
    return " ".join("".join(c if c.isalnum() else " " for c in fold(name)).split())


@dataclass(frozen=True, slots=True)
class Area:
    """A province (level 1) or a district (level 2) under its GeoNames code."""

    code: str  # "CD.11", "CD.11.219056"
    name: str
    level: int
    ascii_name: str = ""
    geonameid: int | None = None
    aliases: tuple[str, ...] = ()

    @property
    def country(self) -> str:
        return self.code[:2]


def admin_level(code: str) -> int | None:
    """1 for an admin1 code ("CD.11"), 2 for an admin2 code ("CD.11.219056"), else None."""
    if _ADMIN1_CODE.match(code):
        return 1
    if _ADMIN2_CODE.match(code):
        return 2
    return None


def is_admin_file(path: Path) -> bool:
    """Whether a file has the shape of GeoNames' admin1CodesASCII.txt or admin2Codes.txt."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    cols = line.rstrip("\n").split("\t")
                    return len(cols) == ADMIN_COLUMNS and admin_level(cols[0]) is not None
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _parse(lines: Iterable[str], path: str) -> Iterator[Area]:
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) != ADMIN_COLUMNS:
            raise AreaFileError(path, number, "-", f"{len(cols)} columns, an admin code file has 4")
        code, name, ascii_name, geonameid = (c.strip() for c in cols)
        level = admin_level(code)
        if level is None:
            raise AreaFileError(path, number, "code", f"{code!r} is no GeoNames admin code (CC.X, CC.X.Y)")
        if code in seen:
            raise AreaFileError(path, number, "code", f"{code!r} appears twice (row {seen[code]})")
        seen[code] = number
        name = name or ascii_name  # GeoNames leaves a few names empty (MC.00)
        if not name:
            raise AreaFileError(path, number, "name", "empty, and no ASCII name either")
        if len(name) > MAX_NAME:
            raise AreaFileError(path, number, "name", f"longer than {MAX_NAME} characters")
        if geonameid and not geonameid.isdigit():
            raise AreaFileError(path, number, "geonameid", f"{geonameid!r} is not a number")
        yield Area(code, name, level, ascii_name, int(geonameid) if geonameid else None)


def read_admin_file(path: Path) -> list[Area]:
    """The areas of an admin1CodesASCII.txt or admin2Codes.txt file; a bad row loads nothing."""
    with open(path, encoding="utf-8") as f:
        return list(_parse(f, str(path)))


@lru_cache(maxsize=1)
def shipped() -> tuple[Area, ...]:
    """The areas this package ships (GeoNames, CC BY 4.0)."""
    data = resources.files("app").joinpath("data")
    out: list[Area] = []
    for name in ("admin1CodesASCII.txt", "admin2Codes.txt"):
        out += _parse(data.joinpath(name).read_text("utf-8").splitlines(), name)
    return tuple(out)


@lru_cache(maxsize=1)
def names_in_use() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Code -> (canonical name, other spellings), from data/area_names.tsv."""
    text = resources.files("app").joinpath("data/area_names.tsv").read_text("utf-8")
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            code, name, *rest = line.split("\t")
            aliases = tuple(a.strip() for a in (rest[0] if rest else "").split(";") if a.strip())
            out[code.strip()] = (name.strip(), aliases)
    return out


def _spellings(area: Area) -> set[str]:
    return {normalize_name(n) for n in (area.name, area.ascii_name, *area.aliases) if n}


@dataclass(frozen=True, slots=True)
class _Name:
    canonical: str
    level: int
    country: str | None


class AreaBook:
    """Every known area: by code, and by each of its names folded."""

    def __init__(self, areas: Iterable[Area], network: Iterable[tuple[str, int, str | None]] = ()) -> None:
        """`areas` by GeoNames code (later ones replace earlier); `network` (name, level, country)."""
        in_use = names_in_use()
        self.by_code: dict[str, Area] = {}
        for area in areas:
            if area.code in in_use:
                name, aliases = in_use[area.code]
                area = replace(area, name=name, aliases=(area.name, *aliases))
            self.by_code[area.code] = area
        # GeoNames has districts that only repeat their province (CD.11.33 "North Kivu" in Nord-Kivu):
        # they are no district, or "North Kivu" would be a second name of Nord-Kivu in incidents.
        for code, area in list(self.by_code.items()):
            province = self.by_code.get(code.rsplit(".", 1)[0]) if area.level == 2 else None
            if province is not None and _spellings(area) & _spellings(province):
                del self.by_code[code]
        self._by_name: dict[str, list[_Name]] = defaultdict(list)
        for area in self.by_code.values():
            entry = _Name(area.name, area.level, area.country)
            for spelling in {area.name, area.ascii_name, *area.aliases}:
                self._add(spelling, entry)
        for name, level, country in network:
            self._add(name, _Name(name, level, country))

    def _add(self, spelling: str, entry: _Name) -> None:
        key = normalize_name(spelling)
        if key and entry not in self._by_name[key]:
            self._by_name[key].append(entry)

    def names_for(
        self, country: str | None, admin1: str | None, admin2: str | None
    ) -> tuple[str | None, str | None]:
        """The names of a place's GeoNames admin codes (None where no name is known)."""
        if not country or not admin1:
            return None, None
        province = self.by_code.get(f"{country}.{admin1}")
        district = self.by_code.get(f"{country}.{admin1}.{admin2}") if admin2 else None
        return (province.name if province else None), (district.name if district else None)

    def canonical(
        self,
        text: str,
        *,
        country: str | None = None,
        level: int | None = None,
        within: Collection[str] | None = None,
    ) -> str | None:
        """The canonical name of an area given by name, other spelling or code; None if unknown.

        Where a spelling names several areas: the one in `country`, then at `level`, then the
        province before the district. A name is only looked for in the countries `within` (all
        when None); a code names its country itself.
        """
        given = text.strip()
        if not given:
            return None
        code = given.upper()
        if admin_level(code) is not None and code in self.by_code:
            return self.by_code[code].name
        if country and f"{country}.{code}" in self.by_code:  # a bare admin1 code: "11"
            return self.by_code[f"{country}.{code}"].name
        hits = self._by_name.get(normalize_name(given), [])
        if within is not None:
            hits = [n for n in hits if n.country is None or n.country in within]
        if not hits:
            return None
        best = min(hits, key=lambda n: (n.country != country, n.level != level, n.level))
        return best.canonical

    def __contains__(self, text: str) -> bool:
        return self.canonical(text) is not None
