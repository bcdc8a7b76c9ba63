"""The few Kubernetes API calls the controller makes itself, with kopf's credentials.

kopf watches and patches the autoscalers; reading the Deployment, its Secret and the other autoscalers
and patching ``/scale`` are ours. A tiny aiohttp client over the same :class:`kopf.ConnectionInfo` (from
the service account, a kubeconfig or a test's login handler) avoids a second Kubernetes library with its
own idea of authentication.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import kopf

from escriba.common.errors import TransientError


class KubeError(TransientError):
    """The API answered with an error or could not be reached; ``status`` is the HTTP code (0: none)."""

    reason = "KubernetesAPIError"

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


_MERGE_PATCH = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo, *, timeout_s: float) -> None:
        self._server = info.server.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "escriba-operator"}
        headers.update(info.as_http_headers())
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def close(self) -> None:
        await self._session.close()

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist (404)."""
        return await self._request("GET", path, none_if_missing=True)

    async def list(self, path: str) -> list[dict[str, Any]]:
        """The items of a collection; an API the cluster does not serve (404) lists nothing."""
        body = await self._request("GET", path, none_if_missing=True)
        items = body.get("items") if body else None
        return [item for item in items or [] if isinstance(item, dict)]

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        body = await self._request("PATCH", path, payload=patch)
        if body is None:  # pragma: no cover - _request raises on 404 without none_if_missing
            raise KubeError(f"PATCH {path}: empty answer")
        return body

    async def json_patch(self, path: str, operations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """An RFC 6902 patch: its ``test`` operations are preconditions (HTTP 422 when one fails)."""
        body = await self._request("PATCH", path, payload=list(operations), content_type=_JSON_PATCH)
        if body is None:  # pragma: no cover - _request raises on 404 without none_if_missing
            raise KubeError(f"PATCH {path}: empty answer")
        return body

    async def _request(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        none_if_missing: bool = False,
        content_type: str = _MERGE_PATCH,
    ) -> dict[str, Any] | None:
        headers = {"Content-Type": content_type} if payload is not None else {}
        data = json.dumps(payload) if payload is not None else None
        try:
            async with self._session.request(method, self._server + path, data=data, headers=headers) as rsp:
                text = await rsp.text()
                if rsp.status == 404 and none_if_missing:
                    return None
                if rsp.status >= 400:
                    raise KubeError(
                        f"{method} {path}: HTTP {rsp.status}: {_message(text)}", status=rsp.status
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KubeError(f"{method} {path}: not JSON: {text[:200]!r}") from exc
        return body if isinstance(body, dict) else None


def _message(text: str) -> str:
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text[:200]
    return str(body.get("message", text[:200])) if isinstance(body, dict) else text[:200]
