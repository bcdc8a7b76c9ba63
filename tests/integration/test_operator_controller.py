"""The operator end to end: kopf against kmock's Kubernetes emulator, a real nats-server holding real
pending jobs, and a real HTTP endpoint answering Prometheus queries.

Each test runs the operator in-process with a 0.3 s timer and waits for what it writes to the emulated
API server: the Deployment's ``/scale`` patches, the autoscaler's status and the Events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
from aiohttp import web

from escriba_operator.backlog import Credentials, NatsPool
from escriba_operator.handlers import register
from escriba_operator.settings import OperatorSettings
from tests.integration import test_operator_backlog as nats_fixtures
from tests.integration.test_operator_backlog import PASSWORD, USER, JobQueue, free_port
from tests.support.nats_secure import secured_nats
from tests.support.waiting import eventually

# The real nats-server and the job queue on it, shared with the backlog reader's tests.
nats_url = nats_fixtures.nats_url
queue = nats_fixtures.queue

NS = "escriba"
TARGET = "escriba-transcription"
TAS = "escriba.io/v1alpha1/transcriptionautoscalers"
DEPLOYMENTS = "apps/v1/deployments"
EVENTS = "v1/events"
PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


# A Prometheus-compatible query endpoint ----------------------------------------------------------------


@dataclass
class Prometheus:
    """Answers ``/api/v1/query`` from ``series``: a list of sample values per query (``None``: HTTP 500)."""

    series: dict[str, list[float] | None] = field(default_factory=dict)
    #: Queries answered with labelled samples (e.g. one per pod).
    labelled: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        self.queries.append(query)
        if query in self.labelled:
            samples = [
                {"metric": labels, "value": [1_700_000_000.0, str(value)]}
                for labels, value in self.labelled[query]
            ]
            return web.json_response(
                {"status": "success", "data": {"resultType": "vector", "result": samples}}
            )
        values = self.series.get(query, [])
        if values is None:
            return web.json_response({"status": "error", "error": "storage unavailable"}, status=500)
        result = [
            {"metric": {"gpu": str(i)}, "value": [1_700_000_000.0, str(value)]}
            for i, value in enumerate(values)
        ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest.fixture()
async def prometheus() -> AsyncIterator[Prometheus]:
    stub = Prometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stub.url = f"http://127.0.0.1:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()


# The emulated cluster ----------------------------------------------------------------------------------


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server's ``generateName`` (kopf names its Events that way) and
    its answer to a JSON patch whose ``test`` fails (HTTP 422, nothing changed).

    ``before_scale`` runs before a ``/scale`` patch is applied: another writer scaling in between.
    """

    before_scale: Callable[[], None] | None = None

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        meta = request.data.get("metadata") if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and isinstance(meta, dict) and not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'object-')}{next(self._names)}"
        if request.method == "PATCH" and request.subresource == "scale" and isinstance(request.data, list):
            if self.before_scale is not None:
                self.before_scale()
            current = self.objects[DEPLOYMENTS, request.namespace, request.name or ""]["spec"]["replicas"]
            for op in request.data:
                if op.get("op") == "test" and op.get("path") == "/spec/replicas" and op["value"] != current:
                    message = f"the server rejected our request: test of /spec/replicas failed ({current})"
                    return web.json_response(
                        {"kind": "Status", "status": "Failure", "reason": "Invalid", "message": message},
                        status=422,
                    )
        return await super()._handle(request)

    _names = itertools.count(1)


def _resource(
    kind: str, *, namespaced: bool = True, subresources: tuple[str, ...] = ()
) -> kmock.ResourceInfo:
    verbs = {"list", "watch", "get", "create", "patch", "update", "delete"}
    return kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=verbs, subresources=set(subresources))


@pytest.fixture()
async def cluster() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        emulator.resources[TAS] = _resource("TranscriptionAutoscaler", subresources=("status",))
        emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = _resource(
            "CustomResourceDefinition", namespaced=False
        )
        emulator.resources["v1/namespaces"] = _resource("Namespace", namespaced=False)
        emulator.resources[EVENTS] = _resource("Event")
        emulator.resources["v1/secrets"] = _resource("Secret")
        emulator.resources["v1/pods"] = _resource("Pod")
        emulator.resources[DEPLOYMENTS] = _resource("Deployment", subresources=("scale", "status"))
        emulator.resources["autoscaling/v2/horizontalpodautoscalers"] = _resource("HorizontalPodAutoscaler")
        emulator.resources[PEERINGS] = _resource("ClusterKopfPeering", namespaced=False)
        # The /scale subresource answers with a Scale object (the emulator already merged the patch).
        emulator[kmock.resource(DEPLOYMENTS), kmock.subresource("scale")] << _scale_of(emulator)
        emulator.objects["v1/namespaces", None, NS] = {"metadata": {"name": NS}}
        emulator.objects["v1/secrets", NS, "nats-credentials"] = {
            "metadata": {"name": "nats-credentials", "namespace": NS},
            "data": {"user": _b64(USER), "password": _b64(PASSWORD)},
        }
        yield emulator


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _scale_of(emulator: kmock.KubernetesEmulator) -> Callable[[kmock.Request], dict[str, Any]]:
    def scale(request: kmock.Request) -> dict[str, Any]:
        deployment = emulator.objects[DEPLOYMENTS, request.namespace, request.name or ""]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": request.name, "namespace": request.namespace},
            "spec": {"replicas": deployment["spec"]["replicas"]},
            "status": {"replicas": deployment.get("status", {}).get("replicas", 0)},
        }

    return scale


def add_deployment(cluster: kmock.KubernetesEmulator, *, replicas: int, ready: int | None = None) -> None:
    cluster.objects[DEPLOYMENTS, NS, TARGET] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": TARGET, "namespace": NS},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": replicas if ready is None else ready},
    }


def autoscaler_spec(nats: str, prom: Prometheus, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": TARGET},
        "minReplicas": 1,
        "maxReplicas": 10,
        "queue": {
            "natsUrl": nats,
            "credentialsSecretRef": {"name": "nats-credentials"},
            "drainDeadlineSeconds": 60,
        },
        "throughput": {"initialAudioSecondsPerSecond": 10, "query": "throughput", "smoothingSeconds": 1},
        "gpu": {"prometheusUrl": prom.url, "query": "gpu", "targetUtilizationPercent": 80},
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 10, "periodSeconds": 60}]}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def add_autoscaler(
    cluster: kmock.KubernetesEmulator, spec: dict[str, Any], name: str = "transcription"
) -> None:
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.objects[TAS, NS, name] = {
        "apiVersion": "escriba.io/v1alpha1",
        "kind": "TranscriptionAutoscaler",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "creationTimestamp": created,
        },
        "spec": spec,
    }


# Running the operator ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def operator(
    cluster: kmock.KubernetesEmulator, *, standalone: bool = True, priority: int = 0, **settings: Any
) -> AsyncIterator[OperatorSettings]:
    options = OperatorSettings(
        interval_s=0.3, request_timeout_s=2.0, metrics_port=free_port(), health_port=free_port(), **settings
    )
    registry = kopf.OperatorRegistry()
    register(registry, options, connection=kopf.ConnectionInfo(server=str(cluster.url), insecure=True))
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=standalone,
            priority=priority,
            peering_name=None if standalone else options.peering_name,
            liveness_endpoint=f"http://127.0.0.1:{options.health_port}/healthz",
            stop_flag=stop,
        )
    )
    try:
        yield options
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


def status_of(cluster: kmock.KubernetesEmulator, name: str = "transcription") -> dict[str, Any]:
    return dict(cluster.objects[TAS, NS, name].get("status") or {})


def condition(cluster: kmock.KubernetesEmulator, kind: str, name: str = "transcription") -> dict[str, Any]:
    for item in status_of(cluster, name).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def scale_patches(cluster: kmock.KubernetesEmulator) -> list[int]:
    """The replicas each ``/scale`` patch asked for (a JSON patch: the precondition, then the change)."""
    return [
        next(op["value"] for op in r.data if op["op"] == "replace")
        for r in cluster
        if r.method == "PATCH" and r.resource == kmock.resource(DEPLOYMENTS) and r.subresource == "scale"
    ]


def events(cluster: kmock.KubernetesEmulator, reason: str | None = None) -> list[dict[str, Any]]:
    found = []
    for (resource, _, _), obj in cluster.objects.items():
        if resource == kmock.resource(EVENTS) and not obj.deleted:
            raw = dict(obj)
            if reason is None or raw.get("reason") == reason:
                found.append(raw)
    return found


# The tests ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("durations", "expected"),
    [([1200.0] * 6, 6), ([5.0] * 6, 1)],
    ids=["six-20-minute-files", "six-5-second-clips"],
)
async def test_scales_on_audio_seconds_not_on_message_count(
    cluster: kmock.KubernetesEmulator,
    queue: JobQueue,
    nats_url: str,
    prometheus: Prometheus,
    durations: list[float],
    expected: int,
) -> None:
    await queue.create()
    await queue.publish(durations)
    prometheus.series = {"gpu": [50.0, 40.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))
    backlog = sum(durations)

    async with operator(cluster) as options:
        await eventually(
            lambda: status_of(cluster).get("backlogSeconds") == backlog, "the backlog in the status"
        )
        status = await eventually(
            lambda: status_of(cluster) if status_of(cluster).get("desiredReplicas") == expected else None,
            f"desiredReplicas == {expected}",
        )
        await eventually(
            lambda: cluster.objects[DEPLOYMENTS, NS, TARGET]["spec"]["replicas"] == expected, "the Deployment"
        )
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(f"http://127.0.0.1:{options.metrics_port}/metrics")).text()
            liveness = await http.get(f"http://127.0.0.1:{options.health_port}/healthz")
            probe = await liveness.json()

    assert status["pendingJobs"] == 6
    assert status["signals"]["backlog"]["waitingJobs"] == 6
    assert status["signals"]["backlog"]["recommendation"] == expected
    assert status["gpuUtilization"] == 45.0  # the mean over the GPUs the query returned
    assert status["throughput"] == pytest.approx(10.0)
    assert condition(cluster, "Ready")["status"] == "True"
    assert condition(cluster, "ScalingActive")["status"] == "True"
    assert condition(cluster, "BacklogAvailable")["status"] == "True"
    assert (
        f'escriba_autoscaler_desired_replicas{{name="transcription",namespace="{NS}"}} {expected}.0'
        in metrics
    )
    assert liveness.status == 200 and "autoscaler" in probe
    if expected == 1:
        assert scale_patches(cluster) == []
        assert events(cluster, "ScaledUp") == []
    else:
        assert scale_patches(cluster) == [expected]
        assert status["lastScaleTime"]
        # 7200 s over 60 s at 10 audio-s/s asks for 12, the 6 jobs cap it at 6: from 1, a burst.
        assert status["signals"]["backlog"]["recommendation"] == 6
        assert status["limitedBy"] == "Burst"
        [scaled] = await eventually(lambda: events(cluster, "ScaledUp"), "the ScaledUp event")
        assert scaled["type"] == "Normal"
        assert scaled["involvedObject"]["name"] == "transcription"
        assert "1 -> 6 replicas" in scaled["message"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("fallback", "expected"),
    [({"mode": "Hold"}, 2), ({"mode": "Static", "replicas": 3}, 3)],
    ids=["hold", "static"],
)
async def test_a_missing_consumer_is_a_condition_and_the_fallback_never_max_replicas(
    cluster: kmock.KubernetesEmulator,
    queue: JobQueue,
    nats_url: str,
    prometheus: Prometheus,
    fallback: dict[str, Any],
    expected: int,
) -> None:
    await queue.create(consumer=None)
    await queue.publish([3600.0] * 8)
    prometheus.series = {"gpu": [30.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=2)
    spec = autoscaler_spec(nats_url, prometheus, queue={"consumer": "transcription", "fallback": fallback})
    add_autoscaler(cluster, spec)

    async with operator(cluster):
        missing = await eventually(
            lambda: (
                condition(cluster, "BacklogAvailable") if condition(cluster, "BacklogAvailable") else None
            ),
            "the BacklogAvailable condition",
        )
        await eventually(lambda: status_of(cluster).get("desiredReplicas") == expected, "the fallback")
        await eventually(
            lambda: cluster.objects[DEPLOYMENTS, NS, TARGET]["spec"]["replicas"] == expected, "the Deployment"
        )
        [warning] = await eventually(lambda: events(cluster, "ConsumerNotFound"), "the Warning event")

    assert missing["status"] == "False" and missing["reason"] == "ConsumerNotFound"
    assert condition(cluster, "Ready")["status"] == "False"
    assert condition(cluster, "ScalingActive")["reason"] == "FallbackInUse"
    assert status_of(cluster)["signals"]["backlog"]["state"] == "Missing"
    assert warning["type"] == "Warning"
    assert 10 not in scale_patches(cluster)
    assert scale_patches(cluster) == ([] if expected == 2 else [3])


@pytest.mark.timeout(90)
async def test_a_failing_gpu_query_is_a_condition_and_no_opinion_not_a_freeze(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    prometheus.series = {"gpu": None, "throughput": [10.0]}  # the GPU query answers HTTP 500
    add_deployment(cluster, replicas=3)
    spec = autoscaler_spec(
        nats_url, prometheus, minReplicas=1, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}}
    )
    add_autoscaler(cluster, spec)

    async with operator(cluster):
        gpu = await eventually(
            lambda: condition(cluster, "GPUUtilizationAvailable") or None, "the GPU condition"
        )
        await eventually(lambda: scale_patches(cluster) == [1], "the empty queue giving replicas back")
        status = status_of(cluster)

    assert gpu["status"] == "False" and gpu["reason"] == "QueryFailed"
    assert "storage unavailable" not in gpu["message"]  # the endpoint's body never reaches the status
    assert status["signals"]["gpu"]["state"] == "Missing"
    assert status["signals"]["gpu"].get("recommendation") is None  # Hold: no opinion, the backlog decides


@pytest.mark.timeout(90)
async def test_another_autoscaler_on_the_deployment_is_a_condition_not_a_fight(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    await queue.publish([1200.0] * 4)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    cluster.objects["autoscaling/v2/horizontalpodautoscalers", NS, "cpu"] = {
        "metadata": {"name": "cpu", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET}},
    }
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))

    async with operator(cluster):
        active = await eventually(
            lambda: condition(cluster, "ScalingActive") or None, "the ScalingActive condition"
        )
        await eventually(lambda: status_of(cluster).get("desiredReplicas") == 4, "the decision")
        [warning] = await eventually(lambda: events(cluster, "ConflictingAutoscaler"), "the Warning event")

    assert active["status"] == "False" and active["reason"] == "ConflictingAutoscaler"
    assert "HorizontalPodAutoscaler cpu" in active["message"]
    assert warning["type"] == "Warning"
    assert scale_patches(cluster) == []
    assert cluster.objects[DEPLOYMENTS, NS, TARGET]["spec"]["replicas"] == 1


@pytest.mark.timeout(90)
async def test_dry_run_reports_the_decision_without_scaling(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    await queue.publish([1200.0] * 3)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus, dryRun=True))

    async with operator(cluster):
        await eventually(lambda: status_of(cluster).get("desiredReplicas") == 3, "the decision")

    assert condition(cluster, "ScalingActive")["reason"] == "DryRun"
    assert scale_patches(cluster) == []


@pytest.mark.timeout(120)
async def test_scales_to_zero_after_the_cooldown_and_back_on_the_first_job(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    prometheus.series = {"gpu": [0.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    spec = autoscaler_spec(
        nats_url,
        prometheus,
        minReplicas=0,
        activation={"scaleToZeroCooldownSeconds": 1},
        behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
    )
    add_autoscaler(cluster, spec)

    async with operator(cluster):
        await eventually(lambda: scale_patches(cluster) == [0], "the scale to zero")
        cluster.objects[DEPLOYMENTS, NS, TARGET]["status"] = {"replicas": 0, "readyReplicas": 0}
        await eventually(
            lambda: status_of(cluster).get("currentReplicas") == 0, "zero replicas in the status"
        )
        await queue.publish([30.0])
        await eventually(lambda: scale_patches(cluster) == [0, 1], "the scale from zero")
        await eventually(lambda: events(cluster, "ScaledUp"), "the ScaledUp event")

    [down] = events(cluster, "ScaledDown")
    assert "1 -> 0 replicas" in down["message"]
    assert status_of(cluster)["limitedBy"] == "Activation"


@pytest.mark.timeout(90)
async def test_a_higher_priority_peer_keeps_this_operator_from_acting(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    await queue.publish([1200.0] * 2)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))
    now = datetime.datetime.now(datetime.UTC).isoformat()
    other = {"priority": 100, "lifetime": 60, "lastseen": now}
    cluster.objects[PEERINGS, None, "escriba-operator"] = {
        "metadata": {"name": "escriba-operator"},
        "status": {"other-replica@elsewhere": other},
    }

    async with operator(cluster, standalone=False):

        def peers() -> dict[str, Any]:
            return dict(cluster.objects[PEERINGS, None, "escriba-operator"].get("status") or {})

        await eventually(lambda: len(peers()) == 2, "this operator in the peering object")
        await asyncio.sleep(1.5)  # five timer intervals in which a running operator would have scaled
        assert scale_patches(cluster) == []
        assert "status" not in cluster.objects[TAS, NS, "transcription"]

        gone = {"status": {"other-replica@elsewhere": None}}
        rsp = await cluster.patch("/apis/kopf.dev/v1/clusterkopfpeerings/escriba-operator", json=gone)
        assert rsp.status == 200
        await eventually(lambda: scale_patches(cluster) == [2], "scaling once the other peer is gone")


@pytest.mark.timeout(90)
async def test_deleting_an_autoscaler_stops_it_and_drops_its_metrics(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))
    series = 'escriba_autoscaler_desired_replicas{name="transcription"'

    async with operator(cluster) as options, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{options.metrics_port}/metrics"

        async def metrics() -> str:
            async with http.get(url) as rsp:
                return await rsp.text()

        await eventually(lambda: status_of(cluster).get("desiredReplicas") == 1, "a first evaluation")
        assert series in await metrics()
        rsp = await cluster.delete(
            f"/apis/escriba.io/v1alpha1/namespaces/{NS}/transcriptionautoscalers/transcription"
        )
        assert rsp.status == 200
        await eventually(lambda: cluster.objects[TAS, NS, "transcription"].deleted, "the finalizer released")
        for _ in range(100):
            if series not in await metrics():
                break
            await asyncio.sleep(0.05)
        assert series not in await metrics()


@pytest.mark.timeout(90)
async def test_reads_the_backlog_with_a_creds_file_over_tls_from_a_private_ca(
    cluster: kmock.KubernetesEmulator, tmp_path: Path, prometheus: Prometheus
) -> None:
    """A NATS with account JWTs and mTLS: `nats.creds` in the credentials Secret, `ca.crt`, `tls.crt`
    and `tls.key` in a TLS Secret as cert-manager writes it. The operator reads the consumer with
    them, over the client protocol."""
    with secured_nats(tmp_path / "nats", tls=True, verify_clients=True) as secured:
        pki = secured.pki
        assert pki is not None
        secrets = {
            "nats-secure": {"nats.creds": secured.creds_file},
            "nats-tls": {"ca.crt": pki.ca, "tls.crt": pki.client.cert, "tls.key": pki.client.key},
        }
        for name, files in secrets.items():
            cluster.objects["v1/secrets", NS, name] = {
                "metadata": {"name": name, "namespace": NS},
                "data": {key: _b64(path.read_text()) for key, path in files.items()},
            }
        pool = NatsPool(timeout_s=5)
        try:
            nc = await pool.connection(
                secured.url,
                Credentials(
                    creds=secured.creds,
                    ca=pki.ca.read_text(),
                    cert=pki.client.cert.read_text(),
                    key=pki.client.key.read_text(),
                ),
            )
            queue = JobQueue(nc)
            await queue.create()
            await queue.publish([300.0, 120.0, 60.0])
            prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
            add_deployment(cluster, replicas=1)
            spec = autoscaler_spec(
                secured.url,
                prometheus,
                queue={
                    "credentialsSecretRef": {"name": "nats-secure"},
                    "tlsSecretRef": {"name": "nats-tls"},
                },
            )
            add_autoscaler(cluster, spec)
            async with operator(cluster):
                await eventually(
                    lambda: status_of(cluster).get("backlogSeconds") == 480.0, "the backlog in the status"
                )
            assert condition(cluster, "BacklogAvailable")["status"] == "True"
        finally:
            await pool.close()
