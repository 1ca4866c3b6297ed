"""User classes: a JSON class map from a dataset's own class ids and names to the model's (Occ3D) classes.

classes.json lists every id the dataset's 2D labels (point classes, class images) use:

    {"classes": [{"id": 0, "name": "road", "to": "driveable_surface"},
                 {"id": 7, "name": "van", "to": "car"},
                 {"id": 20, "name": "sky", "to": null}]}

"to" names a model class (or gives its index 0..16) or is null (not a class the model learns: such pixels
and points are left unlabelled). Ids are 0..254; 255 always means unknown. Without a class map the labels
hold the model's class ids themselves (Occ3D 0..16). The user names also label the classes in `prepare`'s
summary, the pictures and the viewer. 3D labels always use the model's classes (Occ3D, 17 = free).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renderocc.core.classes import NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.core.files import read_json

UNKNOWN = 255  # in class images, point classes and the model-class lookup: no label
NOT_LISTED = -1  # lookup value of an id the class map does not list: an error where it occurs


@dataclass(frozen=True)
class ClassMap:
    """User class ids [K], their names [K] and the model class of each [K] (0..16, or UNKNOWN)."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    targets: tuple[int, ...]
    source: str = "the model's own classes"  # where it came from, for error messages

    @property
    def is_identity(self) -> bool:
        return self.source == DEFAULT.source

    def lookup(self) -> np.ndarray:
        """int16 [256]: user id -> model class (0..16), UNKNOWN, or NOT_LISTED."""
        lut = np.full(256, NOT_LISTED, dtype=np.int16)
        lut[UNKNOWN] = UNKNOWN
        lut[list(self.ids)] = self.targets
        return lut

    def to_model(self, ids: np.ndarray, where: str | Path) -> np.ndarray:
        """Map user class ids (any integer array) to model classes uint8 (UNKNOWN where unlabelled).

        An id the map does not list raises, naming `where` and the fix.
        """
        ids = np.asarray(ids)
        if ids.size == 0:
            return np.zeros(ids.shape, np.uint8)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi > UNKNOWN:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{where}: class id {bad} is out of range; class ids are 0..254 (255 = unknown)")
        mapped = self.lookup()[ids]
        bad = mapped == NOT_LISTED
        if bad.any():
            value = int(ids[bad].flat[0])
            raise ValueError(f"{where}: class id {value} is unknown; {self.fix(value)}")
        return mapped.astype(np.uint8)

    def fix(self, value: int) -> str:
        if self.is_identity:
            return (
                f"labels without classes.json must hold model classes 0..{NUM_SEMANTIC - 1} (255 = unknown); "
                "add a classes.json that maps your ids (see docs/data_format.md)"
            )
        return f'add {{"id": {value}, "name": ..., "to": ...}} to {self.source}'

    def names_per_model_class(self) -> dict[int, list[str]]:
        """Model class -> the user names mapped to it (classes no user class reaches are absent)."""
        out: dict[int, list[str]] = {}
        for name, target in zip(self.names, self.targets):
            if target < NUM_SEMANTIC:
                out.setdefault(target, []).append(name)
        return out

    def to_json(self) -> dict:
        return {
            "classes": [
                {"id": i, "name": n, "to": _target_name(t)}
                for i, n, t in zip(self.ids, self.names, self.targets)
            ]
        }


def _target_name(target: int) -> str | None:
    return None if target == UNKNOWN else OCC3D_CLASSES[target]


DEFAULT = ClassMap(
    ids=tuple(range(NUM_SEMANTIC)),
    names=OCC3D_CLASSES[:NUM_SEMANTIC],
    targets=tuple(range(NUM_SEMANTIC)),
    source="the model's own classes",
)


def parse_class_map(data: object, source: str) -> ClassMap:
    """A ClassMap from the decoded JSON of a class map; errors name `source` and the entry."""
    entries = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            f'{source}: expected {{"classes": [{{"id": 0, "name": "road", "to": "driveable_surface"}}, ...]}}'
        )
    ids, names, targets = [], [], []
    for k, entry in enumerate(entries):
        where = f"{source}: classes[{k}]"
        if not isinstance(entry, dict) or not {"id", "to"} <= set(entry):
            raise ValueError(f'{where} must be an object with "id", "name" and "to"')
        uid, to = entry["id"], entry["to"]
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < UNKNOWN:
            raise ValueError(f"{where}: id {uid!r} must be an integer 0..254 (255 means unknown)")
        if uid in ids:
            raise ValueError(f"{where}: id {uid} is listed twice; give each id once")
        if to is None:
            target = UNKNOWN
        elif isinstance(to, str) and to in OCC3D_CLASSES[:NUM_SEMANTIC]:
            target = OCC3D_CLASSES.index(to)
        elif isinstance(to, int) and not isinstance(to, bool) and 0 <= to < NUM_SEMANTIC:
            target = to
        else:
            raise ValueError(
                f'{where}: "to": {to!r} is not a model class; use one of '
                f"{', '.join(OCC3D_CLASSES[:NUM_SEMANTIC])} "
                f"(or its index 0..{NUM_SEMANTIC - 1}), or null for a class the model should not learn"
            )
        ids.append(uid)
        names.append(str(entry.get("name", uid)))
        targets.append(target)
    return ClassMap(tuple(ids), tuple(names), tuple(targets), source)


def load_class_map(path: str | Path | None) -> ClassMap:
    """The class map in `path`, or the model's own classes when `path` is None."""
    if path is None:
        return DEFAULT
    data = read_json(path, "class map", "write it (docs/data_format.md) or remove its mention")
    return parse_class_map(data, str(path))


def class_legend(names: dict[int, list[str]] | None) -> list[tuple[int, str]]:
    """(model class, label) of the classes a legend shows: all 17, or with a class map only those it reaches,
    labelled with the user names where they differ from the model's ("car: car, van")."""
    if names is None:
        return [(c, OCC3D_CLASSES[c]) for c in range(NUM_SEMANTIC)]
    out = []
    for c in sorted(names):
        user = [n for n in names[c] if n != OCC3D_CLASSES[c]]
        out.append((c, f"{OCC3D_CLASSES[c]}: {', '.join(names[c])}" if user else OCC3D_CLASSES[c]))
    return out
