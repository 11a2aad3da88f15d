"""Place resolution: the words a sender wrote -> a place of the gazetteer, else their home, else
their phone's country. The index lives in memory (150,000 places resolve in well under a
millisecond) and is reloaded when the places table changes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.enums import Precision
from app.models import GazetteerVersion, Place
from app.services.areas import AreaBook, normalize_name
from app.services.gazetteer import NETWORK_SOURCE, area_book

MAX_NAME_WORDS = 4
# A GeoNames place this close to a place of the network's own gazetteer, under one of its names,
# is that place (GeoNames' "Hyosha", alias Oicha, 3 km from the network's Oicha): not a homonym.
SAME_PLACE_KM = 20.0
FUZZY_REACH_KM = 150.0
EARTH_KM = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(math.sqrt(min(1.0, h)))


@dataclass(frozen=True, slots=True)
class Spot:
    """A place of the index."""

    id: int
    name: str
    lat: float
    lon: float
    admin1: str | None
    admin2: str | None
    country: str | None
    population: int
    network: bool = False  # from the network's own gazetteer


@dataclass(frozen=True, slots=True)
class Located:
    """Where a report is, how we know, and what the sender wrote for it."""

    precision: Precision
    lat: float | None = None
    lon: float | None = None
    place: Spot | None = None
    written: str | None = None  # the sender's words, e.g. "largo"
    matched: str | None = None  # what they were read as, e.g. "Largu"
    fuzzy: bool = False

    @property
    def name(self) -> str | None:
        return self.place.name if self.place else None


class PlaceIndex:
    """Names (and alternate names) of every place, normalised, with buckets for fuzzy matching."""

    def __init__(
        self, spots: list[Spot], names: list[tuple[str, int]], areas: AreaBook | None = None
    ) -> None:
        self.spots = spots
        self.areas = areas or AreaBook(())
        self.by_name: dict[str, list[int]] = defaultdict(list)
        for name, index in names:
            if name and index not in self.by_name[name]:
                self.by_name[name].append(index)
        self._merge_into_network_places()
        # Fuzzy candidates share their first or last letters (two, three for long names) with
        # what was written and are within two letters of its length: a few dozen of 150,000.
        buckets: dict[tuple[str, int], list[str]] = defaultdict(list)
        for name in self.by_name:
            if len(name) >= 5:  # shorter names are matched exactly: too many are one letter apart
                for key in _bucket_keys(name, len(name)):
                    buckets[key].append(name)
        self.buckets = dict(buckets)
        self.by_sound: dict[str, list[str]] = defaultdict(list)
        for name in self.by_name:
            if len(name) >= PHONETIC_MIN:
                self.by_sound[sound_of(name)].append(name)
        self.country_centres: dict[str, tuple[float, float]] = {}
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for spot in spots:
            if spot.country:
                acc = sums[spot.country]
                acc[0] += spot.lat
                acc[1] += spot.lon
                acc[2] += 1
        for cc, (lat, lon, n) in sums.items():
            self.country_centres[cc] = (lat / n, lon / n)

    def _merge_into_network_places(self) -> None:
        """Let each network place take in the GeoNames places near it that share one of its names."""
        into: dict[int, int] = {}
        for hits in self.by_name.values():
            if len(hits) < 2:
                continue
            ours = [i for i in hits if self.spots[i].network]
            if not ours or len(ours) == len(hits):
                continue
            for i in hits:
                if self.spots[i].network or i in into:
                    continue
                spot = self.spots[i]
                near = min(
                    ours, key=lambda j: distance_km(spot.lat, spot.lon, self.spots[j].lat, self.spots[j].lon)
                )
                if (
                    distance_km(spot.lat, spot.lon, self.spots[near].lat, self.spots[near].lon)
                    <= SAME_PLACE_KM
                ):
                    into[i] = near
        if not into:
            return
        for name, hits in self.by_name.items():
            # Under a name the network place has, or GeoNames' own name when nothing else bears it,
            # the GeoNames place is the network place; under its other names it stays what it is
            # (GeoNames' Hyosha, alias Oicha and Mangina, does not make Oicha a Mangina).
            merged: list[int] = []
            for i in hits:
                target = into.get(i, i)
                if target != i and target not in hits and len(hits) > 1:
                    target = i
                if target not in merged:
                    merged.append(target)
            self.by_name[name] = merged
        # A network place given without its areas takes those of the place it took in.
        for i, j in into.items():
            mine, theirs = self.spots[j], self.spots[i]
            if not (mine.admin1 or mine.admin2):
                self.spots[j] = replace(
                    mine, admin1=theirs.admin1, admin2=theirs.admin2, country=mine.country or theirs.country
                )

    @classmethod
    def load(cls, session: Session) -> PlaceIndex:
        spots: list[Spot] = []
        names: list[tuple[str, int]] = []
        rows = session.execute(
            select(
                Place.id,
                Place.name,
                Place.alt_names,
                Place.lat,
                Place.lon,
                Place.admin1,
                Place.admin2,
                Place.country,
                Place.population,
                Place.source,
            )
        )
        for row in rows:
            index = len(spots)
            spots.append(
                Spot(
                    row.id,
                    row.name,
                    row.lat,
                    row.lon,
                    row.admin1,
                    row.admin2,
                    row.country,
                    row.population or 0,
                    row.source == NETWORK_SOURCE,
                )
            )
            names.append((normalize_name(row.name), index))
            for alt in (row.alt_names or "").split(";"):
                if alt:
                    names.append((normalize_name(alt), index))
        return cls(spots, names, area_book(session))

    def __len__(self) -> int:
        return len(self.spots)

    def area(self, text: str, *, region: str) -> str | None:
        """The canonical name of the area `text` gives, looked for in the countries the network covers."""
        return self.areas.canonical(text, country=region, within={region, *self.country_centres})

    def resolve(
        self,
        words: list[str],
        *,
        home: tuple[float, float] | None = None,
        area: str | None = None,
        country: str | None = None,
    ) -> Located:
        """The place the words name (longest name first, exact before fuzzy), else home or country."""
        tokens = [normalize_name(w) for w in words]
        tokens = [t for t in tokens if t and not t.isdigit()]
        found = self._exact(tokens, home, area) or self._sounding(tokens, home, area)
        found = found or self._fuzzy(tokens, home, area)
        if found is not None:
            return found
        if home is not None:
            return Located(Precision.HOME, home[0], home[1], written=" ".join(words) or None)
        if country and country in self.country_centres:
            lat, lon = self.country_centres[country]
            return Located(Precision.COUNTRY, lat, lon, written=" ".join(words) or None)
        return Located(Precision.UNKNOWN, written=" ".join(words) or None)

    def _ngrams(self, tokens: list[str]) -> list[tuple[str, int, int]]:
        out = []
        for n in range(min(MAX_NAME_WORDS, len(tokens)), 0, -1):
            for i in range(len(tokens) - n + 1):
                out.append((" ".join(tokens[i : i + n]), i, n))
        return out

    def _exact(self, tokens: list[str], home: tuple[float, float] | None, area: str | None) -> Located | None:
        for name, _, _ in self._ngrams(tokens):
            hits = self.by_name.get(name)
            if hits:
                spot = self._choose(hits, home, area)
                return Located(Precision.PLACE, spot.lat, spot.lon, spot, written=name, matched=spot.name)
        return None

    def _sounding(
        self, tokens: list[str], home: tuple[float, float] | None, area: str | None
    ) -> Located | None:
        """A name spelt as it sounds ("Djougou", "Tshomia"): the same sound as a place's name."""
        for name, _, _ in self._ngrams(tokens):
            if len(name) < PHONETIC_MIN:
                continue
            names = self.by_sound.get(sound_of(name))
            if not names:
                continue
            found = self._guess(sorted({i for n in names for i in self.by_name[n]}), name, home, area)
            if found is not None:
                return found
        return None

    def _fuzzy(self, tokens: list[str], home: tuple[float, float] | None, area: str | None) -> Located | None:
        for name, _, n in self._ngrams(tokens):
            if len(name) < 5 or n > 2:
                continue  # short names are matched exactly: too many are one letter apart
            allowed = 1 if len(name) <= 6 else 2
            candidates: list[str] = []
            for length in range(len(name) - allowed, len(name) + allowed + 1):
                for key in _bucket_keys(name, length):
                    candidates += self.buckets.get(key, ())
            if not candidates:
                continue
            best = process.extract(
                name, candidates, scorer=DamerauLevenshtein.distance, score_cutoff=allowed, limit=None
            )
            if best:
                distance = min(d for _, d, _ in best)
                hits = sorted({i for c, d, _ in best if d == distance for i in self.by_name[c]})
                found = self._guess(hits, name, home, area)
                if found is not None:
                    return found
        return None

    def _guess(
        self, hits: list[int], name: str, home: tuple[float, float] | None, area: str | None
    ) -> Located | None:
        """The place a name not written exactly is read as; None when every candidate is far from
        the sender's home (a guess far from home is no better than the home)."""
        if home is not None:
            hits = [
                i for i in hits if distance_km(*home, self.spots[i].lat, self.spots[i].lon) <= FUZZY_REACH_KM
            ]
            if not hits:
                return None
        spot = self._choose(hits, home, area)
        return Located(Precision.PLACE, spot.lat, spot.lon, spot, written=name, matched=spot.name, fuzzy=True)

    def _choose(self, hits: list[int], home: tuple[float, float] | None, area: str | None) -> Spot:
        """Among homonyms: nearest the sender's home, else in their area, else the most populous."""
        spots = [self.spots[i] for i in hits]
        if len(spots) == 1:
            return spots[0]
        if home is not None:
            return min(spots, key=lambda s: distance_km(home[0], home[1], s.lat, s.lon))
        if area:
            key = normalize_name(area)
            inside = [
                s for s in spots if key in (normalize_name(s.admin1 or ""), normalize_name(s.admin2 or ""))
            ]
            if inside:
                spots = inside
        return max(spots, key=lambda s: s.population)


# How the same name is spelt by people of other languages and schools: "Djougou" for Djugu,
# "Tshomia" for Tchomia, "Mongbwallu" for Mongbwalu. Applied in order to a normalised name.
_SOUNDS = (
    ("tsh", "c"),
    ("tch", "c"),
    ("ch", "c"),
    ("sh", "c"),
    ("dj", "j"),
    ("dz", "j"),
    ("ou", "u"),
    ("w", "u"),
    ("ph", "f"),
    ("kh", "k"),
    ("gh", "g"),
    ("ck", "k"),
    ("qu", "k"),
    ("q", "k"),
    ("y", "i"),
    ("ee", "i"),
    ("h", ""),
)
PHONETIC_MIN = 5  # shorter names are matched as written: too many sound alike


def sound_of(name: str) -> str:
    """A normalised name as it sounds: the spellings of `_SOUNDS` made one, doubled letters single."""
    for written, sound in _SOUNDS:
        name = name.replace(written, sound)
    out: list[str] = []
    for ch in name:
        if not out or out[-1] != ch or ch == " ":
            out.append(ch)
    return "".join(out)


def _bucket_keys(name: str, length: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """The fuzzy buckets a name of `length` letters starting and ending like `name` falls in."""
    k = 3 if length >= 8 else 2
    return ("^" + name[:k], length), (name[-k:] + "$", length)


class PlaceIndexHolder:
    """The current index of a process, reloaded when the places table changes (checked every few s)."""

    def __init__(self, check_every: float = 5.0) -> None:
        self.check_every = check_every
        self._index: PlaceIndex | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def get(self, session: Session) -> PlaceIndex:
        now = time.monotonic()
        if self._index is not None and now - self._checked < self.check_every:
            return self._index
        with self._lock:
            # The version every import counts up (gazetteer.bump_version), and the count and last
            # id for places written by other means.
            version, count, top = session.execute(
                select(
                    select(GazetteerVersion.version).where(GazetteerVersion.id == 1).scalar_subquery(),
                    func.count(Place.id),
                    func.max(Place.id),
                )
            ).one()
            stamp = (int(version or 0), int(count or 0), int(top or 0))
            if self._index is None or stamp != self._stamp:
                self._index = PlaceIndex.load(session)
                self._stamp = stamp
            self._checked = now
            return self._index
