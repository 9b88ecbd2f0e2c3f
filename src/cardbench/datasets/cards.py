"""Dataset cards: one YAML file per registered dataset, shipped in ``cardbench/datasets/cards/``.

A card says what a dataset is (title, description, modality, field strength, label map, annotated
classes, annotators), under which terms it may be used (SPDX license, citation, access route), which
files of the shipped data registry (``data/REGISTRY.tsv``: URL, sha256 and size of every published
file) belong to it, its subjects and standard split, and its known issues. The schema is written
down in docs/datasets.md; in short::

    name: sunnybrook-sample          # registry name; equals the file name without .yaml
    version: "1.0.0"                 # semver of the dataset content (quoted)
    title, description, license (SPDX id), citation, references: [{doi|url, text}]
    source: {repo, commit, url}
    modality, field_strength, label_map (cardbench|acdc|mnms|mapping), classes: [LV, MY]
    annotators: expert | machine-generated | mixed   (+ annotators_note)
    access: open | registration | restricted         (+ access_steps: exact steps when not open)
    registry_prefix: a path prefix (or a list) of REGISTRY.tsv rows
    subjects: [...] ; splits: {train: [...], val: [...], test: [...]} ; splits_version: "1"
    subsets: {source: <registry path>, level: image|subject, ..., definitions: {name: text}}
    known_issues: [...]

A list of subjects may also be written as ``{range: [first, last]}`` (integers, both included), as
in the Kaggle card (patients 1 to 500 ...).

The layout follows the registry idea of scipy's ``scipy.datasets`` (a table of files with their
hashes, fetched by pooch) with the dataset-level facts of "Datasheets for Datasets" (Gebru et al.,
Commun ACM 2021;64(12):86, doi:10.1145/3458723) added.

Errors: :class:`CardError` lists every problem of a card at once, each naming the file, the field,
what is wrong and how to fix it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from cardbench.datasets.embedded import RegistryEntry, registry
from cardbench.labelmaps import CLASSES, get_label_map

#: Split names a card may use, in display order.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
ANNOTATORS = ("expert", "machine-generated", "mixed")
ACCESS = ("open", "registration", "restricted")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
REQUIRED = ("name", "version", "title", "description", "license", "citation", "modality", "field_strength",
            "label_map", "classes", "annotators", "access")
KNOWN_FIELDS = set(REQUIRED) | {
    "references", "source", "annotators_note", "access_steps", "registry_prefix", "subjects", "splits",
    "splits_version", "subsets", "known_issues", "homepage", "doi", "n_subjects", "n_images", "notes",
    "prepare", "layout", "cardbench_layout", "doi_files",
}


class CardError(ValueError):
    """A dataset card is missing, unreadable or violates the schema.

    Attributes:
        source: the card file (or ``"<dict>"``).
        problems: one line per problem (field, what is wrong, how to fix it).
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: invalid dataset card ({len(self.problems)} problem"
                         f"{'s' if len(self.problems) != 1 else ''}):\n{lines}")


@dataclass(frozen=True)
class DatasetCard:
    """A validated dataset card.

    Attributes:
        name, version, title, description, license, citation: as in the YAML.
        modality, field_strength, label_map, classes, annotators, access: as in the YAML
            (``classes`` in cardbench order, a subset of ``("LV", "MY", "RV")``).
        access_steps: exact steps to obtain the parts that cannot be downloaded automatically.
        registry_prefix: prefixes of the REGISTRY.tsv rows that belong to the dataset.
        subjects: every subject id (strings), ``()`` when the card does not list them.
        splits: split name -> subject ids (strings), ``{}`` when the card has no split.
        splits_version: version of the standard split (bumped whenever a split changes).
        subsets: the ``subsets`` mapping of the YAML (``{}`` when absent).
        known_issues: free-text list.
        path: the card file (``None`` for a card built from a dict).
        raw: the parsed YAML mapping, unchanged.
    """

    name: str
    version: str
    title: str
    description: str
    license: str
    citation: str
    modality: str
    field_strength: str
    label_map: Any
    classes: tuple[str, ...]
    annotators: str
    access: str
    access_steps: tuple[str, ...] = ()
    registry_prefix: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    splits_version: str = "1"
    subsets: dict = field(default_factory=dict)
    known_issues: tuple[str, ...] = ()
    path: Path | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def files(self) -> list[RegistryEntry]:
        """The REGISTRY.tsv entries of this dataset, sorted by path (``[]`` when it has none)."""
        return registry_files(self.registry_prefix)

    @property
    def total_bytes(self) -> int:
        """Sum of the registry sizes of :attr:`files` (bytes)."""
        return sum(e.bytes for e in self.files)

    def split_of(self) -> dict[str, str]:
        """subject -> split name, from :attr:`splits`."""
        return {s: name for name, subs in self.splits.items() for s in subs}


def registry_files(prefixes: Iterable[str]) -> list[RegistryEntry]:
    """REGISTRY.tsv entries whose ``local_path`` starts with any of ``prefixes``, sorted by path."""
    prefixes = tuple(prefixes)
    if not prefixes:
        return []
    return [e for p, e in sorted(registry().items()) if p.startswith(prefixes)]


def cards_root():
    """The package's folder of card files (an importlib Traversable)."""
    return resources.files("cardbench.datasets") / "cards"


def list_cards() -> list[str]:
    """Names of the shipped dataset cards, sorted."""
    return sorted(p.name[:-5] for p in cards_root().iterdir() if p.name.endswith(".yaml"))


def _subject_list(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    """Normalise a list of subject ids (ints or strings) or ``{range: [a, b]}`` to strings."""
    if isinstance(value, dict) and set(value) == {"range"}:
        r = value["range"]
        if (not isinstance(r, (list, tuple)) or len(r) != 2 or not all(isinstance(x, int) for x in r)
                or r[0] > r[1]):
            problems.append(f"{where}: range must be [first, last] with integers first <= last (got {r!r})")
            return ()
        return tuple(str(i) for i in range(r[0], r[1] + 1))
    if not isinstance(value, (list, tuple)):
        problems.append(f"{where}: expected a list of subject ids or {{range: [first, last]}} "
                        f"(got {type(value).__name__})")
        return ()
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            problems.append(f"{where}: subject id {v!r} must be a string or an integer")
            continue
        out.append(str(v))
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        problems.append(f"{where}: subjects listed twice: {dup[:10]}; list each subject once")
    return tuple(out)


def _str_list(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: expected a list of strings")
        return ()
    return tuple(value)


def parse_card(data: Any, source: str = "<dict>", *, check_registry: bool = True) -> DatasetCard:
    """Validate a parsed card mapping and return a :class:`DatasetCard`.

    Args:
        data: the mapping read from YAML.
        source: where it came from (used in error messages).
        check_registry: require every ``registry_prefix`` to match at least one REGISTRY.tsv row
            (off for the ``card.yaml`` inside a prepared dataset, which may be anything).

    Raises:
        CardError: every schema violation found (all listed at once).
    """
    p: list[str] = []
    if not isinstance(data, dict):
        raise CardError(source, [f"expected a YAML mapping of fields, got {type(data).__name__}"])
    for k in REQUIRED:
        if data.get(k) in (None, "", []):
            p.append(f"field '{k}' is missing; add it (see the card schema in docs/datasets.md)")
    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        p.append(f"unknown field(s) {unknown}; fix the spelling or remove them (known: {sorted(KNOWN_FIELDS)})")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        p.append(f"name {name!r}: use lower-case letters, digits and '-' (e.g. sunnybrook-sample)")
    version = data.get("version")
    if version is not None and (not isinstance(version, str) or not _SEMVER.match(version)):
        p.append(f"version {version!r}: must be a quoted semantic version string like \"1.0.0\"")
    for k in ("title", "description", "license", "citation", "modality", "field_strength"):
        if data.get(k) is not None and not isinstance(data[k], str):
            p.append(f"field '{k}' must be text (got {type(data[k]).__name__}); quote it")
    if data.get("label_map") is not None:
        try:
            get_label_map(data["label_map"])
        except (ValueError, FileNotFoundError, TypeError) as e:
            p.append(f"label_map: {e}")
    classes: tuple[str, ...] = ()
    if data.get("classes") is not None:
        cl = _str_list(data["classes"], "classes", p)
        bad = [c for c in cl if c not in CLASSES]
        if bad:
            p.append(f"classes: unknown {bad}; use {', '.join(CLASSES)}")
        classes = tuple(c for c in CLASSES if c in cl)
    if data.get("annotators") is not None and data["annotators"] not in ANNOTATORS:
        p.append(f"annotators {data['annotators']!r}: use one of {', '.join(ANNOTATORS)} "
                 "(free text goes in annotators_note)")
    access = data.get("access")
    if access is not None and access not in ACCESS:
        p.append(f"access {access!r}: use one of {', '.join(ACCESS)}")
    steps = _str_list(data.get("access_steps"), "access_steps", p)
    if access in ("registration", "restricted") and not steps:
        p.append(f"access is '{access}' but access_steps is empty; list the exact steps to obtain the data")
    prefixes = _str_list(data.get("registry_prefix"), "registry_prefix", p)
    if check_registry:
        reg = registry()
        for pre in prefixes:
            if not any(k.startswith(pre) for k in reg):
                p.append(f"registry_prefix '{pre}' matches no row of REGISTRY.tsv; fix the prefix or add the "
                         "files to the registry")
    refs = data.get("references")
    if refs is not None:
        if not isinstance(refs, list) or not all(isinstance(r, dict) and ("doi" in r or "url" in r)
                                                 for r in refs):
            p.append("references: expected a list of {doi: ..., text: ...} or {url: ..., text: ...}")
    subjects: tuple[str, ...] = ()
    if data.get("subjects") is not None:
        subjects = _subject_list(data["subjects"], "subjects", p)
    splits: dict[str, tuple[str, ...]] = {}
    if data.get("splits") is not None:
        sp = data["splits"]
        if not isinstance(sp, dict):
            p.append("splits: expected a mapping {train: [...], val: [...], test: [...]}")
        else:
            for k, v in sp.items():
                if k not in SPLIT_NAMES:
                    p.append(f"splits: unknown split '{k}'; use {', '.join(SPLIT_NAMES)}")
                    continue
                splits[k] = _subject_list(v, f"splits.{k}", p)
            splits = {k: splits[k] for k in SPLIT_NAMES if k in splits}
            owner: dict[str, str] = {}
            for k, subs in splits.items():
                for s in subs:
                    if s in owner:
                        p.append(f"splits: subject {s} is in both '{owner[s]}' and '{k}' (leakage); "
                                 "put each subject in exactly one split")
                    owner.setdefault(s, k)
            if subjects:
                extra = sorted(set(owner) - set(subjects))
                if extra:
                    p.append(f"splits: subjects {extra[:10]} are not in 'subjects'; add them or fix the split")
                missing = sorted(set(subjects) - set(owner))
                if missing:
                    p.append(f"splits: subjects {missing[:10]} are in no split; assign each subject a split")
    sv = data.get("splits_version", "1")
    if isinstance(sv, bool) or not isinstance(sv, (str, int)):
        p.append(f"splits_version {sv!r}: must be a string like \"1\"")
    subsets = data.get("subsets") or {}
    if not isinstance(subsets, dict):
        p.append("subsets: expected a mapping {source: <registry path>, level: image|subject, definitions: ...}")
        subsets = {}
    elif subsets:
        src = subsets.get("source")
        if not isinstance(src, str) or (check_registry and src not in registry()):
            p.append(f"subsets.source {src!r}: must be a REGISTRY.tsv path")
        if subsets.get("level") not in ("image", "subject"):
            p.append("subsets.level: use 'image' or 'subject'")
        if not isinstance(subsets.get("definitions"), dict) or not subsets["definitions"]:
            p.append("subsets.definitions: expected a mapping {subset name: description}")
    known = _str_list(data.get("known_issues"), "known_issues", p)
    if p:
        raise CardError(source, p)
    return DatasetCard(
        name=name, version=version, title=data["title"].strip(), description=data["description"].strip(),
        license=data["license"], citation=data["citation"].strip(), modality=data["modality"],
        field_strength=data["field_strength"], label_map=data["label_map"], classes=classes,
        annotators=data["annotators"], access=access, access_steps=steps, registry_prefix=prefixes,
        subjects=subjects, splits=splits, splits_version=str(sv), subsets=dict(subsets), known_issues=known,
        path=None if source == "<dict>" else Path(source), raw=dict(data),
    )


def read_card_file(path: str | Path, *, check_registry: bool = True) -> DatasetCard:
    """Read and validate a card YAML file.

    Raises:
        FileNotFoundError: the file does not exist.
        CardError: not valid YAML, or the schema is violated.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset card not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        from cardbench._util import yaml_error_text

        raise CardError(str(path), [f"not valid YAML {yaml_error_text(e)}"]) from None
    card = parse_card(data, str(path), check_registry=check_registry)
    return card


@lru_cache(maxsize=None)
def load_card(name: str) -> DatasetCard:
    """Load the shipped card of dataset ``name`` (validated).

    Raises:
        KeyError: no card of that name (the message lists the registered names).
        CardError: the card violates the schema.
    """
    res = cards_root() / f"{name}.yaml"
    if not res.is_file():
        raise KeyError(f"unknown dataset '{name}'; registered datasets: {', '.join(list_cards())} "
                       "(see `cardbench data list`)")
    with resources.as_file(res) as p:
        card = read_card_file(p)
    if card.name != name:
        raise CardError(str(res), [f"name '{card.name}' differs from the file name '{name}.yaml'; make them equal"])
    return card


def all_cards() -> list[DatasetCard]:
    """Every shipped card, validated, sorted by name."""
    return [load_card(n) for n in list_cards()]
