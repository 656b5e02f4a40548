"""Patch flavours and server-side-apply field ownership for the twin API server.

Pure functions on plain dicts (no locking, no storage): the store calls them inside its write path.
The semantics are a deliberately small subset of the real apiserver's (structured-merge-diff):
  * lists of maps whose every item has a "name" key (containers, ports, env, volumes, webhooks, ...) are
    merged by name; every other list is atomic;
  * a field path is a tuple of fieldsV1 elements, e.g. ("f:spec", "f:containers", 'k:{"name":"c"}', "f:image"),
    so managedFields look exactly like the real ones (a simplified set, no "v:" set elements).
"""

from __future__ import annotations

import copy
import json

__all__ = [
    "PatchError", "ApplyConflict", "merge_patch", "strategic_merge_patch", "json_patch",
    "server_side_apply", "track_update", "strip_nulls",
]


class PatchError(Exception):
    """A patch that cannot be applied; code 400 for a malformed document, 422 for one that does not fit."""

    def __init__(self, message: str, code: int = 422):
        super().__init__(message)
        self.message = message
        self.code = code


class ApplyConflict(Exception):
    """Server-side apply touched fields another manager owns with a different value (and force was not set)."""

    def __init__(self, conflicts: list[tuple[dict, tuple]]):
        self.conflicts = conflicts  # [(managedFields entry of the other manager, path)]
        super().__init__(self.message)

    @property
    def message(self) -> str:
        # Same wording as k8s.io/apiserver fieldmanager's getConflictMessage.
        if len(self.conflicts) == 1:
            entry, path = self.conflicts[0]
            return f"Apply failed with 1 conflict: conflict with {_print_manager(entry)}: {path_string(path)}"
        by_manager: dict[str, list[str]] = {}
        for entry, path in self.conflicts:
            by_manager.setdefault(_print_manager(entry), []).append(path_string(path))
        lines = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {p}" for p in by_manager[manager])
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)

    def causes(self) -> list[dict]:
        return [{"type": "FieldManagerConflict", "message": f"conflict with {_print_manager(e)}",
                 "field": path_string(p)} for e, p in self.conflicts]


def _print_manager(entry: dict) -> str:
    if entry.get("operation") == "Update":
        return f'"{entry.get("manager", "")}" using {entry.get("apiVersion", "")}'
    return f'"{entry.get("manager", "")}"'


# ---------------------------------------------------------------------------------------------------------------
# merge patch (RFC 7386) and the "good enough" strategic merge patch

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _named_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def strategic_merge_patch(target, patch):
    """Merge patch, except lists of maps keyed by "name" merge item by item ($patch: delete/replace honoured).

    kubectl's client-side apply sends $setElementOrder/$retainKeys directives: they only carry ordering, so they
    are dropped; $deleteFromPrimitiveList/<field> removes values from a primitive list.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and value.get("$patch") == "delete":
            result.pop(key, None)
        elif _named_list(value) and (current is None or _named_list(current) or current == []):
            result[key] = _merge_named_list(current or [], value)
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(current, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_named_list(current: list, patch: list) -> list:
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        index = next((n for n, cur in enumerate(result) if cur.get("name") == item["name"]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


# ---------------------------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)

def _pointer(path) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer: {path!r}", 400)
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list, token: str, path: str, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r} in {path}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds in {path}")
    return index


def _parent(doc, tokens: list[str], path: str):
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, False)]
        else:
            raise PatchError(f'doc is missing path: "{path}": missing value')
    return node


def _jp_get(doc, path: str):
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, False)]
    raise PatchError(f'doc is missing path: "{path}": missing value')


def _jp_add(doc, path: str, value):
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, True), copy.deepcopy(value))
    else:
        raise PatchError(f'doc is missing path: "{path}": missing value')
    return doc


def _jp_remove(doc, path: str):
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, path, False))
    raise PatchError(f'remove operation does not apply: doc is missing path: "{path}": missing value')


def json_patch(target, operations):
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", 400)
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid json patch operation: {op!r}", 400)
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f'{kind} operation requires "value": {op!r}', 400)
        if kind == "add":
            doc = _jp_add(doc, path, op["value"])
        elif kind == "remove":
            _jp_remove(doc, path)
        elif kind == "replace":
            if _pointer(path):
                _jp_remove(doc, path)
            doc = _jp_add(doc, path, op["value"])
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f'{kind} operation requires "from": {op!r}', 400)
            value = _jp_remove(doc, op["from"]) if kind == "move" else copy.deepcopy(_jp_get(doc, op["from"]))
            doc = _jp_add(doc, path, value)
        elif kind == "test":
            try:
                actual = _jp_get(doc, path)
            except PatchError:
                actual = object()
            if actual != op["value"]:
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"unexpected json patch operation {kind!r}", 400)
    return doc


# ---------------------------------------------------------------------------------------------------------------
# server-side apply: field sets, managedFields, conflicts

def strip_nulls(value):
    """Applied configurations treat null as "not specified"."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def _item_key(item: dict) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def path_string(path: tuple) -> str:
    """(f:spec, f:containers, k:{"name":"c"}, f:image) -> .spec.containers[name="c"].image"""
    out = ""
    for element in path:
        if element.startswith("f:"):
            out += "." + element[2:]
        elif element.startswith("k:"):
            out += "".join(f"[{k}={json.dumps(v)}]" for k, v in json.loads(element[2:]).items())
    return out


def _paths(value, prefix: tuple) -> set[tuple]:
    out: set[tuple] = set()
    for key, child in value.items():
        path = prefix + ("f:" + key,)
        if isinstance(child, dict) and child:
            out |= _paths(child, path)
        elif _named_list(child):
            for item in child:
                item_path = path + (_item_key(item),)
                out.add(item_path)  # owning the item itself (so dropping it from an apply removes it)
                out |= _paths(item, item_path)
        else:
            out.add(path)  # scalar, atomic list or empty map
    return out


def scoped(obj: dict, scope: str) -> dict:
    """The part of an object a write at `scope` may own: "main" (no status), "all" (incl. status), "status"."""
    if scope == "status":
        return {"status": obj["status"]} if isinstance(obj.get("status"), dict) and obj["status"] else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    if scope == "main":
        out.pop("status", None)
    meta = obj.get("metadata") or {}
    owned_meta = {k: meta[k] for k in ("labels", "annotations", "finalizers", "ownerReferences") if meta.get(k)}
    if owned_meta:
        out["metadata"] = owned_meta
    return out


def field_paths(obj: dict, scope: str) -> set[tuple]:
    return _paths(scoped(obj, scope), ())


_MISSING = object()


def value_at(obj, path: tuple):
    node = obj
    for element in path:
        if element.startswith("f:") and isinstance(node, dict) and element[2:] in node:
            node = node[element[2:]]
        elif element.startswith("k:") and isinstance(node, list):
            name = json.loads(element[2:])["name"]
            node = next((i for i in node if isinstance(i, dict) and i.get("name") == name), _MISSING)
            if node is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return node


def _remove_path(obj, path: tuple) -> None:
    parent = value_at(obj, path[:-1])
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        name = json.loads(last[2:])["name"]
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get("name") == name)]


def _to_fields_v1(paths: set[tuple]) -> dict:
    root: dict = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
        if path[-1].startswith("k:"):
            node["."] = {}
    return root


def _from_fields_v1(fields: dict, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    for element, child in (fields or {}).items():
        if element == ".":
            out.add(prefix)
            continue
        path = prefix + (element,)
        if not child:
            out.add(path)
        else:
            out |= _from_fields_v1(child, path)
    return out


def _entries(managed: list | None) -> list[tuple[dict, set[tuple]]]:
    return [({k: v for k, v in e.items() if k != "fieldsV1"}, _from_fields_v1(e.get("fieldsV1") or {}))
            for e in (managed or []) if isinstance(e, dict)]


def _same_slot(entry: dict, manager: str, operation: str, subresource: str) -> bool:
    return (entry.get("manager") == manager and entry.get("operation") == operation
            and entry.get("subresource", "") == subresource)


def _render(entries: list[tuple[dict, set[tuple]]], before: list | None) -> list[dict]:
    """Back to metadata.managedFields; an entry whose field set did not change keeps its old time (no-op writes)."""
    old = {(e.get("manager"), e.get("operation"), e.get("subresource", "")): e for e in before or []}
    out = []
    for entry, paths in entries:
        if not paths:
            continue
        rendered = dict(entry)
        rendered["fieldsType"] = "FieldsV1"
        rendered["fieldsV1"] = _to_fields_v1(paths)
        previous = old.get((entry.get("manager"), entry.get("operation"), entry.get("subresource", "")))
        if previous and previous.get("fieldsV1") == rendered["fieldsV1"] \
                and previous.get("apiVersion") == rendered.get("apiVersion"):
            rendered["time"] = previous.get("time", rendered.get("time"))
        out.append(rendered)
    return out


def _new_entry(manager, operation, api_version, subresource, now) -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _changed_paths(old: dict, new: dict, scope: str) -> set[tuple]:
    return {p for p in field_paths(new, scope) if value_at(old, p) != value_at(new, p)}


def track_update(old: dict | None, new: dict, manager: str, api_version: str, scope: str,
                 subresource: str, now: str) -> list[dict]:
    """managedFields after a non-apply write: the writer takes the fields it changed; removed fields are freed."""
    before = ((old or {}).get("metadata") or {}).get("managedFields")
    entries = _entries(before)
    changed = _changed_paths(old or {}, new, scope)
    present = field_paths(new, "all")
    for _, paths in entries:
        paths.difference_update(changed)
        paths.intersection_update(present)
    if changed:
        slot = next((e for e in entries if _same_slot(e[0], manager, "Update", subresource)), None)
        if slot is None:
            slot = (_new_entry(manager, "Update", api_version, subresource, now), set())
            entries.append(slot)
        else:
            slot[0]["time"] = now
            slot[0]["apiVersion"] = api_version
        slot[1].update(changed)
    return _render(entries, before)


def _apply_merge(live, applied):
    if isinstance(live, dict) and isinstance(applied, dict):
        out = copy.deepcopy(live)
        for key, value in applied.items():
            out[key] = _apply_merge(live[key], value) if key in live else copy.deepcopy(value)
        return out
    if _named_list(applied) and isinstance(live, list) and (_named_list(live) or not live):
        out = [copy.deepcopy(i) for i in live]
        for item in applied:
            index = next((n for n, cur in enumerate(out) if cur.get("name") == item["name"]), None)
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = _apply_merge(out[index], item)
        return out
    return copy.deepcopy(applied)


def server_side_apply(live: dict | None, applied: dict, manager: str, api_version: str, scope: str,
                      subresource: str, force: bool, now: str) -> dict:
    """Merge an applied configuration into the live object; returns the new object with its managedFields.

    Raises ApplyConflict when another manager owns an applied field with a different value and not force.
    """
    live = copy.deepcopy(live) if live else {}
    applied = strip_nulls(applied)
    before = (live.get("metadata") or {}).get("managedFields")
    entries = _entries(before)
    mine = next((e for e in entries if _same_slot(e[0], manager, "Apply", subresource)), None)
    previous = set(mine[1]) if mine else set()
    wanted = field_paths(applied, scope)

    conflicts = []
    for entry, paths in entries:
        if entry.get("manager") == manager or entry.get("subresource", "") != subresource:
            continue
        for path in sorted(wanted & paths):
            if path[-1].startswith("k:"):
                continue  # co-owning a list item's existence never conflicts
            current = value_at(live, path)
            if current is not _MISSING and current != value_at(applied, path):
                conflicts.append((entry, path))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for entry, path in conflicts:  # force: ownership moves to the applier
        next(p for e, p in entries if e is entry).discard(path)

    # Fields this manager applied before and omits now are removed, unless someone else still owns them.
    others = set().union(*(p for e, p in entries if e is not (mine[0] if mine else None)))
    result = copy.deepcopy(live)
    for path in sorted(previous - wanted, key=len, reverse=True):
        if not any(o[:len(path)] == path for o in others):
            _remove_path(result, path)

    body = scoped(applied, scope)
    if "metadata" in body:
        meta = result.setdefault("metadata", {})
        for key, value in body.pop("metadata").items():
            meta[key] = _apply_merge(meta[key], value) if key in meta else copy.deepcopy(value)
    result = _apply_merge(result, body)

    if mine is None:
        mine = (_new_entry(manager, "Apply", api_version, subresource, now), set())
        entries.append(mine)
    else:
        mine[0]["time"] = now
        mine[0]["apiVersion"] = api_version
    mine[1].clear()
    mine[1].update(wanted)
    present = field_paths(result, "all")
    for _, paths in entries:
        paths.intersection_update(present)
    result.setdefault("metadata", {})["managedFields"] = _render(entries, before)
    return result
