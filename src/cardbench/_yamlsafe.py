"""Bounded, safe reading of small YAML files written by strangers (submission.yaml, a label map
file, a protocol file): a size limit, regular files only, UTF-8, nesting/alias/scalar limits
checked on the event stream before anything is built, ``SafeLoader`` (no tag builds an object),
duplicate keys refused. Limits: :mod:`cardbench.limits` (``max_meta_bytes``, ``max_meta_depth``,
``max_meta_nodes``...). Used by :mod:`cardbench.benchmark.submission` and :mod:`cardbench.labelmaps`
(this module imports neither, so both layers can use it)."""

from __future__ import annotations

from pathlib import Path


def _yaml_limits_problem(text: str, lim) -> tuple[str, str] | None:
    """Check YAML nesting depth and alias expansion on the event stream (no recursion, no objects built).

    Returns (problem text, name of the limit), or None. The expanded size counts each value once per place it appears after
    replacing every alias (``*a``) by its anchor's content, computed without expanding anything.
    """
    import yaml

    sizes: dict[str, int] = {}
    stack: list[list] = [[None, 0]]  # [anchor, expanded node count]
    total_nodes = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([ev.anchor, 1])
            if len(stack) - 1 > lim.max_meta_depth:
                return (f"nested deeper than {lim.max_meta_depth} levels", "max_meta_depth")
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, n = stack.pop()
            if anchor is not None:
                sizes[anchor] = n
            stack[-1][1] += n
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
            stack[-1][1] += 1
        elif isinstance(ev, yaml.AliasEvent):
            stack[-1][1] += sizes.get(ev.anchor, 1)
        else:
            continue
        total_nodes = stack[0][1] + sum(s[1] for s in stack[1:])
        if total_nodes > lim.max_meta_nodes:
            return (f"more than {lim.max_meta_nodes} values after expanding YAML aliases (an alias bomb?)",
                    "max_meta_nodes")
    return None


def yaml_tag_problem(e, noun: str) -> tuple[str, str] | None:
    """The problem and fix for a YAML tag refused by :class:`yaml.SafeLoader`, or None when ``e`` is
    another error.

    Args:
        e: a :class:`yaml.constructor.ConstructorError` (``could not determine a constructor for the
            tag '...'``: a ``!!python/object/apply:os.system`` or any other tag SafeLoader does not build).
        noun: what the file is, for the message: ``submission.yaml``, ``a label map file``,
            ``a protocol file``, ``a model card``...

    Returns:
        (problem, fix): ``uses the YAML tag !!python/object/apply:os.system (line 1); YAML tags are not
        allowed in <noun> (nothing in a YAML file given to cardbench is ever executed)`` and ``remove
        the tag and write plain keys and values``; the caller puts the file in front (one line: file,
        problem, fix).
    """
    import re

    problem = str(getattr(e, "problem", "") or "")
    if "tag" not in problem:
        return None
    m = re.search(r"'([^']*)'", problem)
    tag = (m.group(1).replace("tag:yaml.org,2002:", "!!") + " ") if m else ""
    mark = getattr(e, "problem_mark", None)
    line = f"line {mark.line + 1}" if mark else "a value"
    return (f"uses the YAML tag {tag}({line}); YAML tags are not allowed in {noun} (nothing in a YAML file "
            "given to cardbench is ever executed)", "remove the tag and write plain keys and values")


class _YamlRefused(Exception):
    """A small YAML file that cannot be used: ``what`` (the problem) and ``fix``."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix


def _unique_key_loader():
    """A :class:`yaml.SafeLoader` subclass that refuses a mapping giving one key twice (PyYAML keeps
    the last silently: ``name: a`` then ``name: b`` would be scored as ``b``)."""
    import yaml

    class UniqueKeySafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        dup = key in seen
                        seen.add(key)
                    except TypeError:  # an unhashable key: the base class says so
                        continue
                    if dup:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", None)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeySafeLoader


def _load_small_yaml(path: Path, lim, noun: str = "submission.yaml", doc: str = "docs/scoring.md, submission.yaml"):
    """The parsed content of a small YAML file written by a stranger: at most ``lim.max_meta_bytes``,
    UTF-8, within the nesting, alias and scalar limits (checked before parsing), safe_load only.

    Args:
        noun: what the file is (``submission.yaml``, ``a label map file``), for the messages.
        doc: the page that describes the file, named in the fix of a syntax or encoding problem.

    Raises:
        _YamlRefused: the problem and its fix.
    """
    import yaml

    from cardbench.limits import Limits

    import stat as _stat

    try:
        st = path.stat()
        if not _stat.S_ISREG(st.st_mode):  # /dev/zero, a FIFO, a folder: never read
            raise _YamlRefused("not a regular file", f"give a YAML file ({noun}), not a device, pipe or folder")
        size = st.st_size
        if size > lim.max_meta_bytes:
            raise _YamlRefused(f"{size} bytes exceed the limit of {lim.max_meta_bytes} for {noun}",
                               f"keep it to a few short keys, or raise {Limits.env_name('max_meta_bytes')}")
        with path.open("rb") as fh:
            raw = fh.read(lim.max_meta_bytes + 1)
        if len(raw) > lim.max_meta_bytes:  # grew since the stat
            raise _YamlRefused(f"more than {lim.max_meta_bytes} bytes, the limit for {noun}",
                               f"keep it to a few short keys, or raise {Limits.env_name('max_meta_bytes')}")
        text = raw.decode("utf-8")
    except PermissionError:
        raise _YamlRefused("cannot be read (permission denied)", "make it readable (chmod a+r) or remove it")
    except UnicodeDecodeError:
        raise _YamlRefused("not UTF-8 text", f"save it as UTF-8 (see {doc})")
    except OSError as e:
        raise _YamlRefused(f"cannot be read ({e.strerror or e})", "check the file")
    try:
        bad = _yaml_limits_problem(text, lim)
        if bad is not None:
            raise _YamlRefused(bad[0], f"write plain keys and values, or raise {Limits.env_name(bad[1])}")
        return yaml.load(text, Loader=_unique_key_loader())  # SafeLoader: no tag builds an object
    except RecursionError:
        raise _YamlRefused(f"nested deeper than {lim.max_meta_depth} levels", "write plain keys and values")
    except yaml.constructor.ConstructorError as e:
        problem = str(e.problem or "")
        if problem.startswith("duplicate key"):
            raise _YamlRefused(f"gives a key twice: {problem}", "give each key once")
        tag = yaml_tag_problem(e, noun)
        if tag is not None:
            raise _YamlRefused(*tag)
        from cardbench._util import yaml_error_text

        raise _YamlRefused(f"not valid YAML {yaml_error_text(e)}",
                           f"fix the syntax (see {doc})")
    except yaml.YAMLError as e:
        from cardbench._util import yaml_error_text

        raise _YamlRefused(f"not valid YAML {yaml_error_text(e)}",
                           f"fix the syntax (see {doc})")
