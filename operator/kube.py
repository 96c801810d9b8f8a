"""A small asyncio Kubernetes REST client: what the operator's actions need, nothing more.

The official client is synchronous (it would block the event loop kopf and the tests share),
so this speaks the REST API through aiohttp, with credentials from KUBECONFIG or the pod's
service account, read once by the official library's config loaders.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

# (group/version prefix, plural) of every resource the operator touches.
TABLES = ("apis/kynamo.io/v1alpha1", "tables")
PARTITIONS = ("apis/kynamo.io/v1alpha1", "partitions")
PODS = ("api/v1", "pods")
PVCS = ("api/v1", "persistentvolumeclaims")
CONFIGMAPS = ("api/v1", "configmaps")
SERVICES = ("api/v1", "services")
NODES = ("api/v1", "nodes")
PDBS = ("apis/policy/v1", "poddisruptionbudgets")
EVENTS = ("api/v1", "events")

Resource = tuple[str, str]


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


def load_configuration() -> k8s_client.Configuration:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    cfg = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=cfg)
    return cfg


def _matches(obj: dict[str, Any], labels: dict[str, str] | None) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in (labels or {}).items())


class Kube:
    """get/list/create/patch/delete over one aiohttp session; create and delete are idempotent."""

    def __init__(self, cfg: k8s_client.Configuration | None = None) -> None:
        self.cfg = cfg or load_configuration()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.cfg.refresh_api_key_hook is not None:  # in-cluster tokens rotate
            self.cfg.refresh_api_key_hook(self.cfg)
        token = (self.cfg.api_key or {}).get("authorization")
        if token:
            h["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        return h

    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the Kubernetes client is closed")
        if self._session is None or self._session.closed:
            ctx: ssl.SSLContext | bool = False
            if self.cfg.host.startswith("https"):
                ctx = ssl.create_default_context(cafile=self.cfg.ssl_ca_cert) if self.cfg.verify_ssl else False
                if ctx and self.cfg.cert_file:
                    ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def _url(self, res: Resource, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = res
        parts = [self.cfg.host.rstrip("/"), prefix]
        if namespace:
            parts += ["namespaces", namespace]
        parts.append(plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)

    async def _call(self, method: str, url: str, *, body: Any = None, ctype: str = "application/json",
                    params: dict[str, str] | None = None) -> Any:
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = ctype
            data = json.dumps(body)
        async with self.session().request(method, url, data=data, headers=headers, params=params) as r:
            text = await r.text()
            if r.status >= 400:
                raise ApiError(r.status, text)
            return json.loads(text) if text else None

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", self._url(res, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(self, res: Resource, namespace: str | None = None,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        doc = await self._call("GET", self._url(res, namespace), params=params)
        # Filter again: a selector the server ignored must never widen what the operator acts on.
        return [o for o in (doc or {}).get("items") or [] if _matches(o, labels)]

    async def create(self, res: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create, or return None when it already exists (so every create is safe to retry)."""
        try:
            return await self._call("POST", self._url(res, namespace), body=body)
        except ApiError as e:
            if e.status == 409:
                return None
            raise

    async def patch(self, res: Resource, namespace: str | None, name: str, body: dict[str, Any], *,
                    status: bool = False) -> dict[str, Any] | None:
        """JSON merge patch (of the status subresource when `status`)."""
        return await self._call("PATCH", self._url(res, namespace, name, "status" if status else None), body=body,
                                ctype="application/merge-patch+json")

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._call("DELETE", self._url(res, namespace, name),
                             body={"propagationPolicy": "Background"})
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise
