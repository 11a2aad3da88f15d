"""Gazetteer imports: a GeoNames dump of 100,000 places loaded, then again unchanged, then with 1% changed.

The dump is synthetic but shaped like GeoNames' `CD.txt`: 19 tab-separated columns, populated
places (feature class P) among streams and hills the reader skips, Congolese-sounding names with
French and English spellings as alternate names, coordinates inside the DRC, admin1 and admin2
codes, populations, time zones. Each import goes through what `kengele gazetteer import` runs
(`gazetteer.read_file`, then `gazetteer.store`), timed apart, on SQLite and then on PostgreSQL when
reachable. What each import reports (added, updated, unchanged) is checked against what was changed.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from app.db import make_engine, upgrade
from app.models import Place
from app.services import gazetteer
from bench.common import expect, postgres_database, postgres_reachable, postgres_required, scratch

PLACES = 100_000
CHANGED = 0.01  # the share of places the third import changes

# Syllables of place names in the eastern DRC (Ituri, the Kivus): Djugu, Kpandroma, Bunia, Mambasa...
ONSETS = ("b", "bw", "d", "dj", "f", "g", "k", "kp", "l", "m", "mb", "mw", "n", "nd", "ng", "ny")
ONSETS += ("r", "s", "t", "ts", "w", "y", "z", "ki", "ka", "mu", "bu", "lu")
VOWELS = tuple("aaeiouu")
SUFFIXES = ("", "", "", "", " Centre", " I", " II", " Mission", " Mines", "-Bas", "-Haut")
ADMIN1 = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "19", "20", "21", "22")
ADMIN1 += ("23", "24", "25", "26", "27", "28", "29", "30", "31", "32")
FEATURES = (("PPL", 90), ("PPLX", 4), ("PPLL", 3), ("PPLA3", 2), ("PPLA2", 1))
OTHERS = (("H", "STM"), ("T", "HLL"), ("L", "LCTY"), ("S", "SCH"))  # lines the reader skips


@dataclass(frozen=True, slots=True)
class Import:
    """One timed import: reading the file, storing its places, and what the store reported."""

    read: float
    store: float
    added: int
    updated: int
    unchanged: int

    @property
    def total(self) -> float:
        return self.read + self.store


def place_name(rnd: random.Random) -> str:
    syllables = "".join(rnd.choice(ONSETS) + rnd.choice(VOWELS) for _ in range(rnd.choice((2, 2, 3, 3, 4))))
    return syllables.capitalize() + rnd.choice(SUFFIXES)


def spellings(name: str, rnd: random.Random) -> list[str]:
    """Alternate names as GeoNames gives them: the French and English transcriptions, an accent, a case."""
    out = []
    if "u" in name:
        out.append(name.replace("u", "ou"))
    if "dj" in name.lower():
        out.append(name.replace("Dj", "Dzh").replace("dj", "dzh"))
    if "y" in name:
        out.append(name.replace("y", "i"))
    if rnd.random() < 0.2:
        out.append(name.replace("a", "á", 1))
    if rnd.random() < 0.1:
        out.append(name.upper())
    return [a for a in out if a != name][: rnd.randrange(0, 4)]


def geonames_line(geonameid: int, rnd: random.Random) -> list[str]:
    """One populated place: the 19 columns of a GeoNames dump."""
    name = place_name(rnd)
    lat = round(rnd.uniform(-13.4, 5.3), 5)
    lon = round(rnd.uniform(12.3, 31.2), 5)
    code = rnd.choices([f for f, _ in FEATURES], [w for _, w in FEATURES])[0]
    population = rnd.choice((0, 0, 0, rnd.randrange(100, 5_000), rnd.randrange(1_000, 80_000)))
    admin1 = rnd.choice(ADMIN1)
    admin2 = str(7_000_000 + ADMIN1.index(admin1) * 40 + rnd.randrange(40)) if rnd.random() < 0.7 else ""
    return [
        str(geonameid),
        name,
        name.replace("á", "a"),
        ",".join(spellings(name, rnd)),
        f"{lat}",
        f"{lon}",
        "P",
        code,
        "CD",
        "",
        admin1,
        admin2,
        "",
        "",
        str(population),
        "",
        str(rnd.randrange(280, 2_900)),
        "Africa/Kinshasa" if lon < 20 else "Africa/Lubumbashi",
        f"20{rnd.randrange(12, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
    ]


def dump(n: int, seed: int = 13) -> list[list[str]]:
    """`n` populated places, and one line in ten of another kind (a stream, a hill) between them."""
    rnd = random.Random(seed)
    lines = []
    geonameid = 200_000
    for _ in range(n):
        geonameid += rnd.randrange(1, 40)
        lines.append(geonames_line(geonameid, rnd))
        if rnd.random() < 0.1:
            geonameid += 1
            other = geonames_line(geonameid, rnd)
            other[6], other[7] = rnd.choice(OTHERS)
            lines.append(other)
    return lines


def change(lines: list[list[str]], share: float, seed: int = 17) -> tuple[list[list[str]], int]:
    """The dump with `share` of its places changed as a new GeoNames release changes them; how many."""
    rnd = random.Random(seed)
    out = [list(cols) for cols in lines]
    places = [cols for cols in out if cols[6] == "P"]
    picked = rnd.sample(places, int(len(places) * share))
    for cols in picked:
        what = rnd.randrange(4)
        if what == 0:
            cols[14] = str(int(cols[14]) + rnd.randrange(1, 500))  # a new census
        elif what == 1:
            cols[3] = ",".join([*filter(None, cols[3].split(",")), cols[1] + "-Village"])
        elif what == 2:
            cols[4] = f"{round(float(cols[4]) + rnd.choice((-1, 1)) * 0.01, 5)}"  # moved
        else:
            cols[11] = cols[11] and str(int(cols[11]) + 1)  # a new district boundary
            cols[1] = cols[1] + " Centre" if not cols[1].endswith(" Centre") else cols[1][: -len(" Centre")]
        cols[18] = "2026-10-01"
    return out, len(picked)


def write(path: Path, lines: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(cols) + "\n" for cols in lines), encoding="utf-8")
    return path


def load(engine: Engine, path: Path) -> Import:
    """Import the file as `kengele gazetteer import FILE` does, timing reading and storing apart."""
    t0 = time.perf_counter()
    rows = gazetteer.read_file(path)
    t1 = time.perf_counter()
    stored = gazetteer.store(engine, rows)
    t2 = time.perf_counter()
    return Import(t1 - t0, t2 - t1, stored.added, stored.updated, stored.unchanged)


def show(what: str, result: Import, first: Import | None = None) -> None:
    ratio = f"   {result.total / first.total:.2f} x the first" if first else ""
    print(
        f"    {what:<22} {result.total:6.2f} s  (read {result.read:5.2f} s, store {result.store:6.2f} s)"
        f"   {result.added:>7,} added, {result.updated:>7,} updated, {result.unchanged:>7,} unchanged{ratio}"
    )


def measure(label: str, url: str, workdir: Path, n: int) -> dict[str, float]:
    """Import the dump into the empty database at `url`, then again unchanged, then with 1% changed."""
    lines = dump(n)
    original = write(workdir / "CD.txt", lines)
    changed_lines, changed = change(lines, CHANGED)
    release = write(workdir / "CD-changed.txt", changed_lines)
    upgrade(url)
    engine = make_engine(url)
    try:
        print(f"  {label}")
        first = load(engine, original)
        show("first import", first)
        expect((first.added, first.updated, first.unchanged) == (n, 0, 0), f"first import: {first}")
        again = load(engine, original)
        show("unchanged re-import", again, first)
        expect((again.added, again.updated, again.unchanged) == (0, 0, n), f"unchanged re-import: {again}")
        moved = load(engine, release)
        show(f"{CHANGED:.0%} changed re-import", moved, first)
        expect(
            (moved.added, moved.updated, moved.unchanged) == (0, changed, n - changed),
            f"re-import with {changed} places changed: {moved}",
        )
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(Place)).scalar_one()
            population = conn.execute(select(func.sum(Place.population))).scalar_one()
        expect(stored == n, f"{stored} places stored, {n} in the file")
        wanted = sum(int(cols[14]) for cols in changed_lines if cols[6] == "P")
        expect(population == wanted, f"the stored populations add up to {population}, the file's to {wanted}")
    finally:
        engine.dispose()
    ratio = again.total / first.total
    print(f"    unchanged re-import / first import: {ratio:.2f}   (target: at most 2)")
    return {"first_s": first.total, "unchanged_s": again.total, "changed_s": moved.total, "ratio": ratio}


def main(n: int = PLACES) -> dict[str, dict[str, float]]:
    print(f"gazetteer import: a GeoNames dump of {n:,} places (CD), imported three times")
    out = {}
    with scratch("gazetteer") as workdir:
        out["sqlite"] = measure("SQLite", f"sqlite:///{workdir / 'places.db'}", workdir, n)
        if postgres_reachable():
            with postgres_database("gazetteer") as url:
                out["postgresql"] = measure("PostgreSQL", url, workdir, n)
        else:
            expect(not postgres_required(), "PostgreSQL is not reachable (KENGELE_TEST_REQUIRE_PG=1)")
            print("  PostgreSQL: not reachable, skipped")
    return out


def smoke() -> dict[str, dict[str, float]]:
    return main(n=2_000)


if __name__ == "__main__":
    main()
