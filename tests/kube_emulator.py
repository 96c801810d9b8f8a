"""kmock's KubernetesEmulator with the API-server behaviour kopf and the operator rely on.

kmock 0.8 stores objects as sent: no uid, resourceVersion or creationTimestamp,
and generateName is ignored (kopf's Events use it). Owner
references need a uid and kopf reads resourceVersion, so creation fills them in, as the API
server does. Label selectors are ignored by kmock; the operator's client filters again.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from typing import Any

import kmock
from kmock._internal import enums

_rv = itertools.count(1)


class Emulator(kmock.KubernetesEmulator):
    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["resourceVersion"] = str(next(_rv))
            if request.namespace and "namespace" not in meta:
                meta["namespace"] = request.namespace
        return await super()._handle(request)
