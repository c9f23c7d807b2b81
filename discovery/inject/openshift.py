"""The proxy's uid and gid on OpenShift, from the pod's namespace.

OpenShift's restricted security context constraints run a namespace's pods only as users in
the range the namespace was given (``openshift.io/sa.scc.uid-range``, such as
``1000620000/10000``) and groups in its supplemental groups
(``openshift.io/sa.scc.supplemental-groups``, one or more such blocks, comma-separated).
uid 1337 is outside them, so on OpenShift (``global.platform: openshift``) the injector runs
the proxy — and exempts from capture — the range's last uid, in the first block's last
group, as Istio's does; a namespace without the annotations (or with ones that do not read)
keeps 1337. A block is ``START/SIZE`` or ``START-END``.
"""

from __future__ import annotations

from collections.abc import Mapping

UID_RANGE = "openshift.io/sa.scc.uid-range"
SUPPLEMENTAL_GROUPS = "openshift.io/sa.scc.supplemental-groups"
DEFAULT_ID = 1337


def block_max(text: str) -> int | None:
    """The last id of one block (``START/SIZE`` or ``START-END``), or None if it does not
    read as one."""
    text = text.strip()
    for sep in ("/", "-"):
        start, found, rest = text.partition(sep)
        if not found:
            continue
        try:
            first, second = int(start), int(rest)
        except ValueError:
            return None
        last = first + second - 1 if sep == "/" else second
        return last if 0 <= first <= last else None
    return None


def proxy_ids(namespace_annotations: Mapping[str, str]) -> tuple[int, int]:
    """(uid, gid) for the proxy of a pod in a namespace with these annotations."""
    uid = block_max(str(namespace_annotations.get(UID_RANGE) or ""))
    groups = str(namespace_annotations.get(SUPPLEMENTAL_GROUPS) or "").split(",")
    gid = block_max(groups[0])
    return (DEFAULT_ID if uid is None else uid, DEFAULT_ID if gid is None else gid)
