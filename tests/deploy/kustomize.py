"""Render deploy/kubernetes's kustomizations offline: the part of kustomize they use.

No kustomize or kubectl ships with Debian 12 in a version that reads today's kustomization
files, so the suite renders them itself, and only what the pack uses: a kustomization lists
`resources` (manifest files, or directories holding a kustomization) and `patches`, each a
file (`path`) holding a strategic-merge patch for the object with the same apiVersion, kind
and name. Anything else in a kustomization (generators, name prefixes, images, targets,
`$patch` directives, a list this merge does not know) is refused, never approximated.

The strategic merge, as Kubernetes defines it for the fields used here:
- a mapping merges key by key, recursively; a `null` value deletes the key;
- a list of mappings with a merge key (containers, volumes and env by `name`, volumeMounts by
  `mountPath`, ports by `containerPort`) merges item by item on that key; new items are added
  at the end;
- a list of scalars (args, command, accessModes, ...) is replaced whole.
Where `kustomize` or `kubectl` is on PATH, tests/deploy/test_kubernetes.py renders with it
too and compares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Object = dict[str, Any]

ALLOWED = {"apiVersion", "kind", "resources", "patches"}
# Kubernetes' patchMergeKey of the lists of mappings the pack's objects and patches use.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
# Lists of mappings without a merge strategy: replaced whole, as Kubernetes does.
REPLACED = {
    "sources",
    "items",
    "ingress",
    "egress",
    "from",
    "to",
    "topologySpreadConstraints",
    "tolerations",
}


class Unsupported(Exception):
    """A kustomization or patch uses something this renderer does not do."""


def load_all(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[Object]:
    """Every object of the kustomization in `directory`, patched."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    extra = set(kustomization) - ALLOWED
    if extra:
        raise Unsupported(f"{directory}: kustomization field(s) {sorted(extra)}")
    objects: list[Object] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        objects.extend(render(target) if target.is_dir() else load_all(target))
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise Unsupported(f"{directory}: a patch with {sorted(patch_entry)}, not only path")
        for patch in load_all(directory / patch_entry["path"]):
            index = _find(objects, patch)
            objects[index] = merge(objects[index], patch, ())
    return objects


def identity(obj: Object) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def _find(objects: list[Object], patch: Object) -> int:
    wanted = identity(patch)
    found = [i for i, obj in enumerate(objects) if identity(obj) == wanted]
    if len(found) != 1:
        raise Unsupported(f"patch for {wanted} matches {len(found)} objects")
    return found[0]


def merge(base: Any, patch: Any, path: tuple[str, ...]) -> Any:
    """`patch` applied to `base` by the strategic-merge rules above (new objects)."""
    if isinstance(patch, dict):
        if any(str(key).startswith("$") for key in patch):
            raise Unsupported(f"{'.'.join(path)}: patch directives are not supported")
        if not isinstance(base, dict):
            return patch
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge(base.get(key), value, (*path, key))
        return merged
    if isinstance(patch, list) and patch and all(isinstance(item, dict) for item in patch):
        field = path[-1] if path else ""
        if field in REPLACED:
            return patch
        key = MERGE_KEYS.get(field)
        if key is None:
            raise Unsupported(f"{'.'.join(path)}: a list of mappings with no known merge key")
        items = list(base or [])
        for item in patch:
            positions = [i for i, old in enumerate(items) if old.get(key) == item[key]]
            if positions:
                items[positions[0]] = merge(items[positions[0]], item, (*path, str(item[key])))
            else:
                items.append(item)
        return items
    return patch
