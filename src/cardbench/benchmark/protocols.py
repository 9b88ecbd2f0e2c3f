"""Scoring protocols: named, versioned, validated rules for which values are computed, what each
status counts as, and how values are aggregated. Edge-case rules are declared as data (one table per
metric and status), in the spirit of panoptica's edge-case handling, so they are printed in every
``summary.json`` and can be read without reading code.

The built-in protocols ship as YAML files inside the package (``protocol_files/<name>.yaml``);
a user's protocol is a YAML file of the same form (:func:`load_protocol`, ``cardbench score
--protocol FILE.yaml``). docs/protocols.md describes the keys.

``ankenbrand2021`` (v1.0)
    The seed paper's protocol (Ankenbrand et al., MRM 2021;86:2179, doi:10.1002/mrm.28822, and its
    analysis code chfc-cmi/cmr-seg-tl). One Dice per 2D image (slice x frame) per class from
    confusion counts; an image whose class is empty in both reference and prediction counts as
    Dice 1; the figure is the plain mean over all images of the split. No confidence interval.

``cardbench-v1`` (v1.0, default)
    One value per 3D volume (subject, frame) per class; both empty: NaN, excluded and counted; one
    side empty: Dice 0 (and, for distances, the worst case); values are averaged per subject first,
    then over subjects, with a 95 % percentile bootstrap confidence interval that resamples
    subjects (images and frames of one subject are not independent). NSD at a tolerance in mm
    is an addition (``added_metrics``): every other value is what it was before NSD existed.

Versions: ``MAJOR.MINOR``. The version names the *values*: a change in how any existing metric is
computed, treated in an edge case or aggregated needs a new version (a new major version, and a
new name such as ``cardbench-v2``, when results stop being comparable). An addition that changes
no existing value (a metric in ``added_metrics``, a parameter whose default keeps the earlier
values) keeps the version; ``summary.json`` records ``added_metrics`` and ``parameters``, so a
reader sees whether NSD was computed and at which tolerance.

Policy values: ``"value"`` keeps the computed value, a number replaces it, ``"nan"`` excludes it,
``"worst"`` substitutes the metric's worst case (0 for Dice/IoU/NSD; the field-of-view diagonal in
mm for distances). A number must be a value of the metric (:meth:`MetricSpec.bad_value`: in [0, 1] for
Dice/IoU/NSD, >= 0 mm for distances). A protocol file may not keep a built-in protocol's name while
changing what it computes (:func:`load_protocol`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from cardbench.benchmark.metric_registry import (
    METRICS, POLICY_RULES, UnknownMetricError, check_policy, distance_policy as _distance_policy, get_metric,
    overlap_policy as _overlap_policy,
)

__all__ = [
    "AGGREGATIONS", "ANKENBRAND2021", "CARDBENCH_V1", "DEFAULT_PROTOCOL", "LEVELS", "METRIC_DIRECTION",
    "METRIC_UNITS", "METRIC_WORST", "PROTOCOLS", "Protocol", "ProtocolError", "get_protocol", "load_protocol",
    "protocol_from_dict", "protocol_names",
]

#: the levels a protocol may score at: one value per 2D image or per 3D (subject, frame) volume.
LEVELS = ("image", "volume")
#: aggregations: mean over all values, or the per-subject mean first, then the mean over subjects.
AGGREGATIONS = ("pooled", "subject")
#: keys of a protocol file.
KEYS = ("name", "version", "description", "level", "aggregation", "metrics", "added_metrics", "policy",
        "parameters", "bootstrap", "seed", "citation")
_REQUIRED = ("name", "version", "level", "aggregation", "metrics")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}$")
#: a protocol file larger than this is refused (bytes).
MAX_PROTOCOL_BYTES = 256 * 1024

#: direction of each metric: +1 higher is better, -1 lower is better (read-only view of the registry).
METRIC_DIRECTION: Mapping[str, int] = MappingProxyType({n: s.direction for n, s in METRICS.items()})
#: fixed worst value of each bounded metric (distances: computed per case from the field of view).
METRIC_WORST: Mapping[str, float] = MappingProxyType({n: s.worst for n, s in METRICS.items() if s.worst is not None})
#: units for reports.
METRIC_UNITS: Mapping[str, str] = MappingProxyType({n: s.unit for n, s in METRICS.items()})


class ProtocolError(ValueError):
    """A protocol that does not validate: the message is one line naming the file (or protocol),
    the key, the bad value and the allowed values."""


class _ReadOnlyDict(dict):
    """A dict that refuses changes (policies and parameters of a protocol are read-only); it still
    serialises as JSON and pickles (worker processes)."""

    def _refuse(self, *a, **k):
        raise TypeError("protocol policies and parameters are read-only; build a new Protocol "
                        "(dataclasses.replace) instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return (_ReadOnlyDict, (dict(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _freeze(d: Mapping) -> _ReadOnlyDict:
    return _ReadOnlyDict({k: _freeze(v) if isinstance(v, Mapping) else v for k, v in d.items()})


def _thaw(d):
    return {k: _thaw(v) for k, v in d.items()} if isinstance(d, Mapping) else d


@dataclass(frozen=True)
class Protocol:
    """A scoring protocol; checked when built (:class:`ProtocolError` for a bad key or value).

    Attributes:
        name, version: identity written into every result (``version`` is ``MAJOR.MINOR``).
        description: one paragraph for reports.
        level: ``"image"`` (one value per 2D image) or ``"volume"`` (per 3D subject-frame volume).
        aggregation: ``"pooled"`` (mean over all values) or ``"subject"`` (per-subject mean first).
        metrics: metric names aggregated and reported, in report order (registered metrics).
        policy: metric -> status -> rule (see module docstring); read-only. Metrics with a policy
            but not in ``metrics`` are computed in the per-case table only (HD, MASD).
        bootstrap: number of bootstrap resamples of subjects for 95 % CIs (0: none).
        seed: random seed of the bootstrap.
        citation: the definition's source.
        added_metrics: metrics added without changing any existing value, aggregated and
            reported like ``metrics`` (kept apart so that ``metrics`` of a version never changes).
        parameters: metric -> parameter -> value (NSD: ``tolerance_mm``, a number in mm or a
            mapping class -> mm with an optional ``default``); read-only.
        source: the file the protocol was read from ("" for one built in code).
    """

    name: str
    version: str
    description: str
    level: str
    aggregation: str
    metrics: tuple[str, ...]
    policy: Mapping[str, Mapping[str, object]]
    bootstrap: int = 0
    seed: int = 20210421
    citation: str = ""
    extra: dict = field(default_factory=dict)
    added_metrics: tuple[str, ...] = ()
    parameters: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    source: str = field(default="", compare=False)

    def __post_init__(self):
        where = self.source or f"protocol {self.name!r}"

        def bad(key, value, allowed):
            raise ProtocolError(f"{where}: key '{key}': bad value {value!r}; allowed: {allowed}")

        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            bad("name", self.name, "1-64 letters, digits, '.', '_', '-'")
        if not isinstance(self.version, str) or not _VERSION_RE.match(self.version):
            bad("version", self.version, "a quoted 'MAJOR.MINOR' string, e.g. \"1.0\"")
        if self.level not in LEVELS:
            bad("level", self.level, ", ".join(LEVELS))
        if self.aggregation not in AGGREGATIONS:
            bad("aggregation", self.aggregation, ", ".join(AGGREGATIONS))
        for key in ("metrics", "added_metrics"):
            ms = getattr(self, key)
            if isinstance(ms, str) or not all(isinstance(m, str) for m in ms):
                bad(key, ms, "a list of metric names: " + ", ".join(METRICS))
            for m in ms:
                if m not in METRICS:
                    bad(key, m, ", ".join(METRICS))
            object.__setattr__(self, key, tuple(ms))
        if not self.metrics:
            bad("metrics", list(self.metrics), "at least one of " + ", ".join(METRICS))
        dup = set(self.metrics) & set(self.added_metrics)
        if dup or len(set(self.metrics)) != len(self.metrics) or len(set(self.added_metrics)) != len(self.added_metrics):
            bad("added_metrics", sorted(dup) or list(self.added_metrics), "each metric listed once")
        if not isinstance(self.policy, Mapping):
            bad("policy", self.policy, "a mapping metric -> status -> rule")
        for m, rules in self.policy.items():
            if m not in METRICS:
                bad("policy", m, ", ".join(METRICS))
            try:
                check_policy(m, rules, where)
            except ValueError as e:
                raise ProtocolError(str(e)) from None
            spec = get_metric(m)
            for st, rule in rules.items():  # a number replaces a value: it must be one the metric can take
                if isinstance(rule, (int, float)) and not isinstance(rule, bool) and spec.bad_value(rule):
                    rng = "a number in [0, 1]" if spec.in_unit_interval else f"a number >= 0 ({spec.unit or 'no unit'})"
                    bad(f"policy.{m}.{st}", rule, f"{rng}, or one of {', '.join(POLICY_RULES)} "
                        f"({spec.label} {spec.bad_value(rule).split(' is ', 1)[-1]})")
        for m in self.all_metrics:
            if m not in self.policy:
                bad("policy", f"<no entry for {m}>", f"a status -> rule table for every metric ({m})")
        self._check_parameters(where, bad)
        for key, lo, hi in (("bootstrap", 0, 100_000), ("seed", 0, 2 ** 32 - 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(key, v, f"an integer {lo}..{hi}")
        for key in ("description", "citation"):
            if not isinstance(getattr(self, key), str):
                bad(key, getattr(self, key), "text")
        object.__setattr__(self, "policy", _freeze({m: dict(r) for m, r in self.policy.items()}))
        object.__setattr__(self, "parameters", _freeze(self.parameters))

    def _check_parameters(self, where, bad):
        if not isinstance(self.parameters, Mapping):
            bad("parameters", self.parameters, "a mapping metric -> parameter -> value")
        for m, prm in self.parameters.items():
            if m not in self.policy:
                bad("parameters", m, "a metric the protocol computes: " + ", ".join(self.policy))
            allowed = get_metric(m).parameters
            if not isinstance(prm, Mapping):
                bad(f"parameters.{m}", prm, "a mapping parameter -> value: " + (", ".join(allowed) or "none"))
            for k, v in prm.items():
                if k not in allowed:
                    bad(f"parameters.{m}", k, ", ".join(allowed) or "none")
                if k == "tolerance_mm":
                    _check_tolerance(v, f"parameters.{m}.tolerance_mm", bad)

    # ---- derived

    @property
    def all_metrics(self) -> tuple[str, ...]:
        """Aggregated and reported metrics: ``metrics`` then ``added_metrics``."""
        return self.metrics + self.added_metrics

    @property
    def major(self) -> int:
        """The major version (results of one major version are comparable)."""
        return int(self.version.split(".")[0])

    def parameter(self, metric: str, key: str):
        """A metric parameter: the protocol's value, else the registry's default."""
        prm = self.parameters.get(metric) or {}
        return prm[key] if key in prm else get_metric(metric).parameters[key]

    def nsd_tolerance(self, cls: str | None = None):
        """NSD tolerance tau in mm: for class ``cls``, or as declared (number or mapping) when None.
        None when the protocol does not compute NSD.

        Raises:
            ProtocolError: a per-class tolerance gives neither ``cls`` nor ``default``.
        """
        if "nsd" not in self.policy:
            return None
        tau = self.parameter("nsd", "tolerance_mm")
        if cls is None:
            return _thaw(tau)
        if isinstance(tau, Mapping):
            if cls in tau:
                return float(tau[cls])
            if "default" in tau:
                return float(tau["default"])
            raise ProtocolError(f"{self.source or 'protocol ' + self.name}: key 'parameters.nsd.tolerance_mm': "
                                f"no tolerance for class {cls}; allowed: add {cls}: MM or default: MM")
        return float(tau)

    def with_nsd_tolerance(self, tau) -> "Protocol":
        """A copy with NSD tolerance ``tau`` mm (a number or a mapping class -> mm).

        Raises:
            ProtocolError: the protocol does not compute NSD, or ``tau`` is not positive.
        """
        if "nsd" not in self.policy:
            raise ProtocolError(f"protocol {self.name} does not compute NSD; --nsd-tol needs a protocol with "
                                "nsd in its policy (e.g. cardbench-v1)")
        params = _thaw(self.parameters)
        params.setdefault("nsd", {})["tolerance_mm"] = tau
        return replace(self, parameters=params)

    def definition(self) -> dict:
        """The protocol as the plain mapping of its YAML file (keys :data:`KEYS`)."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "level": self.level, "aggregation": self.aggregation, "metrics": list(self.metrics),
                "added_metrics": list(self.added_metrics), "policy": _thaw(self.policy),
                "parameters": _thaw(self.parameters), "bootstrap": self.bootstrap, "seed": self.seed,
                "citation": self.citation}

    def to_yaml(self) -> str:
        """The protocol file (YAML) that :func:`load_protocol` reads back to an equal protocol."""
        import yaml

        return yaml.safe_dump(self.definition(), sort_keys=False, allow_unicode=True, width=100)

    def to_dict(self) -> dict:
        """JSON-friendly description (written into summary.json)."""
        out = {
            "name": self.name, "version": self.version, "description": self.description,
            "level": self.level, "aggregation": self.aggregation, "metrics": list(self.metrics),
            "policy": {m: dict(p) for m, p in self.policy.items()},
            "bootstrap": {"resamples": self.bootstrap, "seed": self.seed, "unit": "subject",
                          "interval": "95 % percentile"} if self.bootstrap else None,
            "citation": self.citation,
            "added_metrics": list(self.added_metrics),
            "parameters": _thaw(self.parameters),
            "nsd_tolerance_mm": self.nsd_tolerance(),
        }
        if self.source:
            out["source"] = self.source
        return out


def _check_tolerance(v, key, bad):
    def ok(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0 < x <= 1000

    if isinstance(v, Mapping):
        if not v:
            bad(key, dict(v), "a number of mm or a mapping class -> mm (and an optional default)")
        for c, x in v.items():
            if not isinstance(c, str) or not (c == "default" or re.match(r"^[A-Za-z][A-Za-z0-9+_-]{0,31}$", c)):
                bad(key, c, "class names (LV, MY, RV, ...) or default")
            if not ok(x):
                bad(f"{key}.{c}", x, "a number of mm > 0 (at most 1000)")
    elif not ok(v):
        bad(key, v, "a number of mm > 0 (at most 1000), or a mapping class -> mm")


def protocol_from_dict(d: Mapping, source: str = "") -> Protocol:
    """Build a protocol from the mapping of a protocol file.

    Raises:
        ProtocolError: not a mapping, a missing or unknown key, a bad value; one line naming
            ``source``, the key, the bad value and the allowed values.
    """
    where = source or "protocol"
    if not isinstance(d, Mapping):
        raise ProtocolError(f"{where}: a protocol file must be a YAML mapping of {', '.join(KEYS)}")
    for k in d:
        if k not in KEYS:
            import difflib

            near = difflib.get_close_matches(str(k), KEYS, n=1)
            raise ProtocolError(f"{where}: unknown key {k!r}" + (f" (did you mean '{near[0]}'?)" if near else "")
                                + f"; allowed: {', '.join(KEYS)}")
    for k in _REQUIRED:
        if k not in d:
            raise ProtocolError(f"{where}: key '{k}' is missing; add it (allowed keys: {', '.join(KEYS)})")
    metrics = d["metrics"]
    added = d.get("added_metrics") or []
    for key, ms in (("metrics", metrics), ("added_metrics", added)):
        if not isinstance(ms, (list, tuple)):
            raise ProtocolError(f"{where}: key '{key}': bad value {ms!r}; allowed: a list of metric names: "
                                + ", ".join(METRICS))
    policy = d.get("policy") or {}
    if not isinstance(policy, Mapping):
        raise ProtocolError(f"{where}: key 'policy': bad value {policy!r}; allowed: a mapping metric -> status -> rule")
    for key, ms in (("metrics", metrics), ("added_metrics", added), ("policy", list(policy))):
        for m in ms:
            if not isinstance(m, str) or m not in METRICS:
                raise ProtocolError(f"{where}: key '{key}': bad value {m!r}; allowed: {', '.join(METRICS)}")
    full: dict = {}
    for m in list(policy) + [m for m in list(metrics) + list(added) if m not in policy]:
        rules = policy.get(m)
        if rules is not None and not isinstance(rules, Mapping):
            raise ProtocolError(f"{where}: key 'policy.{m}': bad value {rules!r}; allowed: a mapping status -> rule")
        # statuses the file leaves out take the metric's default edge-case rule
        full[m] = {**dict(get_metric(m).edge_cases), **dict(rules or {})}
    kw = {k: d[k] for k in ("description", "citation", "bootstrap", "seed") if k in d and d[k] is not None}
    kw.setdefault("description", "")
    return Protocol(name=d["name"], version=d["version"], level=d["level"], aggregation=d["aggregation"],
                    metrics=tuple(metrics), added_metrics=tuple(added), policy=full,
                    parameters=d.get("parameters") or {}, source=source, **kw)


def load_protocol(path: str | Path) -> Protocol:
    """Read a protocol file (YAML, safe loader: no tags, no code).

    Raises:
        ProtocolError: unreadable, too large, not YAML, or not a valid protocol (one line naming
            the file, the key, the bad value and the allowed values); a file that keeps a built-in
            protocol's name but differs from it in a value-deciding key (:data:`_VALUE_KEYS`).
    """
    import stat

    import yaml

    from cardbench.limits import Limits, get_limits

    p = Path(path)
    limit = min(MAX_PROTOCOL_BYTES, get_limits().max_meta_bytes)
    too_big = (f"{p}: protocol file is larger than {limit} bytes (the metadata limit); a protocol is a short "
               f"YAML file (see `cardbench protocol show cardbench-v1`), or raise {Limits.env_name('max_meta_bytes')}")
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):  # /dev/zero, a FIFO, a folder: never read
            raise ProtocolError(f"{p}: not a regular file; give a protocol YAML file, not a device, pipe or folder")
        if st.st_size > limit:
            raise ProtocolError(too_big)
        with p.open("rb") as fh:
            raw = fh.read(limit + 1)
        if len(raw) > limit:
            raise ProtocolError(too_big)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ProtocolError(f"{p}: protocol file not found; give a YAML file or one of: "
                            f"{', '.join(protocol_names())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProtocolError(f"{p}: cannot read the protocol file ({e}); save it as UTF-8 YAML") from None
    from cardbench._yamlsafe import _yaml_limits_problem

    try:
        bad = _yaml_limits_problem(text, get_limits())  # nesting and alias expansion, before anything is built
        if bad is not None:
            raise ProtocolError(f"{p}: {bad[0]}; a protocol is a short YAML file of plain keys and values "
                                f"(`cardbench protocol show cardbench-v1`), or raise {Limits.env_name(bad[1])}")
        data = yaml.safe_load(text)
    except RecursionError:
        raise ProtocolError(f"{p}: nested too deeply; a protocol is a short YAML file of plain keys and values "
                            "(`cardbench protocol show cardbench-v1`)") from None
    except yaml.YAMLError as e:
        from cardbench._yamlsafe import yaml_tag_problem

        tag = yaml_tag_problem(e, "a protocol file")
        if tag is not None:  # a tag is no syntax error: say so, and why it is refused
            raise ProtocolError(f"{p}: not valid YAML for cardbench: {tag[0]}; {tag[1]} (`cardbench protocol "
                                "show cardbench-v1` prints a valid file)") from None
        from cardbench._util import yaml_error_text

        raise ProtocolError(f"{p}: not valid YAML ({yaml_error_text(e)}); fix the syntax "
                            "(`cardbench protocol show cardbench-v1` prints a valid file)") from None
    proto = protocol_from_dict(data, source=str(p))
    _check_not_builtin(proto, p)
    return proto


#: the parts of a protocol that decide its values (a file may reword description and citation, and
#: set parameters, e.g. the NSD tolerance, which results record and the benchmark id names).
_VALUE_KEYS = ("version", "level", "aggregation", "metrics", "added_metrics", "policy", "bootstrap", "seed")


def protocol_differences(have: Mapping, want: Mapping, keys=_VALUE_KEYS) -> list[str]:
    """What differs between two protocol descriptions (:meth:`Protocol.definition` or
    :meth:`Protocol.to_dict` mappings), one short phrase each, e.g. ``"policy.dice.both_empty 1.0 ->
    5.0"``; empty when the value-deciding keys agree."""
    out: list[str] = []
    for k in keys:
        a, b = have.get(k), want.get(k)
        if k == "policy" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for m in sorted(set(a) | set(b)):
                ra, rb = a.get(m) or {}, b.get(m) or {}
                if m not in a or m not in b:
                    out.append(f"policy.{m} {'absent' if m not in a else 'present'} -> "
                               f"{'absent' if m not in b else 'present'}")
                    continue
                for st in sorted(set(ra) | set(rb)):
                    if ra.get(st) != rb.get(st):
                        out.append(f"policy.{m}.{st} {ra.get(st)!r} -> {rb.get(st)!r}")
        elif _thaw(a) != _thaw(b) and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                                          and list(a) == list(b)):
            out.append(f"{k} {_thaw(a)!r} -> {_thaw(b)!r}")
    return out


def _check_not_builtin(proto: Protocol, path: Path) -> None:
    """Refuse a protocol file that keeps a built-in protocol's name but changes how values are computed:
    it would be scored, titled and ranked as the built-in."""
    builtin = PROTOCOLS.get(proto.name)
    if builtin is None:
        like = [n for n in PROTOCOLS if n.casefold() == str(proto.name).casefold()]
        if like:  # CardBench-V1: another protocol to cardbench, one folder with it on a case-blind disk
            raise ProtocolError(f"{path}: protocol name '{proto.name}' differs from the built-in '{like[0]}' only in "
                                f"upper/lower case; write '{like[0]}' exactly, or give it a name of its own (key "
                                f"'name', e.g. {like[0]}-custom)")
        return
    diff = protocol_differences(builtin.definition(), proto.definition())
    if diff:
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise ProtocolError(f"{path}: the file changes protocol {builtin.name} v{builtin.version} ({shown}); give it "
                            f"a name of its own (key 'name', e.g. {builtin.name}-custom) or use --protocol "
                            f"{builtin.name}")


def _load_builtin(name: str) -> Protocol:
    from importlib.resources import files

    import yaml

    res = files("cardbench.benchmark").joinpath("protocol_files", f"{name}.yaml")
    return protocol_from_dict(yaml.safe_load(res.read_text(encoding="utf-8")))


CARDBENCH_V1 = _load_builtin("cardbench-v1")
ANKENBRAND2021 = _load_builtin("ankenbrand2021")

#: the built-in protocols, by name (read-only).
PROTOCOLS: Mapping[str, Protocol] = MappingProxyType({p.name: p for p in (CARDBENCH_V1, ANKENBRAND2021)})
DEFAULT_PROTOCOL = CARDBENCH_V1.name


def protocol_names() -> list[str]:
    """Names of the built-in protocols (the CLI's choices), default first."""
    return list(PROTOCOLS)


def get_protocol(name: "str | Path | Protocol") -> Protocol:
    """Return a built-in protocol by name, or read a protocol file (``*.yaml``/``*.yml``).

    Raises:
        ProtocolError (a ValueError): unknown name (the message lists the known ones) or an invalid file.
    """
    if isinstance(name, Protocol):
        return name
    s = str(name)
    if s in PROTOCOLS:
        return PROTOCOLS[s]
    if s.lower().endswith((".yaml", ".yml")) or isinstance(name, Path):
        return load_protocol(s)
    raise ProtocolError(f"unknown protocol '{s}'; use one of {', '.join(PROTOCOLS)} or a protocol file (.yaml)")


# kept for code that built policies by hand
_overlap_policy = _overlap_policy
_distance_policy = _distance_policy
UnknownMetricError = UnknownMetricError


def _tol_text(tol) -> str:
    if isinstance(tol, Mapping):
        return "-".join(f"{c}{float(v):g}" for c, v in sorted(tol.items())) + "mm"
    return f"{float(tol):g}mm"


def benchmark_suffix(proto: Mapping) -> str:
    """The part of a leaderboard benchmark id after the protocol name: its NSD tolerance.

    ``""`` at the protocol's packaged NSD tolerance (so the ids of earlier releases,
    ``<dataset>__<split>__cardbench-v1``, stay what they were); otherwise ``+nsd<tau>mm``
    (``+nsdLV1.5-MY2mm`` for per-class tolerances). The version is not part of the id: a
    protocol's name carries its major version (``cardbench-v1``), benchmark.json records the full
    version, and :func:`protocols_compatible` refuses a result of another major version.

    Args:
        proto: ``summary["protocol"]`` (:meth:`Protocol.to_dict`).
    """
    out = ""
    tol = proto.get("nsd_tolerance_mm")
    if tol is not None:
        builtin = PROTOCOLS.get(str(proto.get("name")))
        default = builtin.nsd_tolerance() if builtin is not None and builtin.nsd_tolerance() is not None \
            else get_metric("nsd").parameters["tolerance_mm"]
        if _thaw(tol) != _thaw(default):
            out += "+nsd" + _tol_text(tol)
    return out


def protocols_compatible(have: Mapping, want: Mapping) -> bool:
    """Whether results of protocol ``want`` may join a benchmark of protocol ``have`` (both
    :meth:`Protocol.to_dict`): same name, level and aggregation, the same major version, the same
    rule for every metric both compute, and the same NSD tolerance when both compute NSD. A
    benchmark whose results predate NSD accepts results with NSD (the addition changes no value)."""
    if (have.get("name"), have.get("level"), have.get("aggregation")) != \
            (want.get("name"), want.get("level"), want.get("aggregation")):
        return False
    if str(have.get("version", "")).split(".")[0] != str(want.get("version", "")).split(".")[0]:
        return False
    hp, wp = have.get("policy") or {}, want.get("policy") or {}
    if any(hp[m] != wp[m] for m in set(hp) & set(wp)):
        return False
    ht, wt = have.get("nsd_tolerance_mm"), want.get("nsd_tolerance_mm")
    if "nsd" in hp and "nsd" in wp and ht is not None and wt is not None and _thaw(ht) != _thaw(wt):
        return False
    return True
