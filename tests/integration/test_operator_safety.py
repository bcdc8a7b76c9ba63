"""The operator when something else moves: another writer of the replicas, other autoscalers, a restart,
a second operator replica, and a spec that names addresses it should not.

Same harness as ``test_operator_controller``: kopf against kmock's emulator, a real nats-server, a real
HTTP endpoint answering Prometheus queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from escriba_operator.spec import DEFAULT_BUSY_BY_POD_QUERY, DEFAULT_BUSY_SLOTS_QUERY, DEFAULT_SLOTS_QUERY
from tests.integration import test_operator_backlog as nats_fixtures
from tests.integration import test_operator_controller as harness
from tests.integration.test_operator_backlog import JobQueue, free_port
from tests.integration.test_operator_controller import (
    DEPLOYMENTS,
    NS,
    PEERINGS,
    TARGET,
    TAS,
    Emulator,
    Prometheus,
    add_autoscaler,
    add_deployment,
    autoscaler_spec,
    condition,
    events,
    operator,
    scale_patches,
    status_of,
)
from tests.support.waiting import eventually

nats_url = nats_fixtures.nats_url
queue = nats_fixtures.queue
cluster = harness.cluster
prometheus = harness.prometheus


def _iso(seconds_ago: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scale_requests(cluster: kmock.KubernetesEmulator) -> list[list[dict[str, Any]]]:
    return [
        list(r.data)
        for r in cluster
        if r.method == "PATCH" and r.resource == kmock.resource(DEPLOYMENTS) and r.subresource == "scale"
    ]


@pytest.mark.timeout(90)
async def test_a_scale_by_someone_else_in_between_wins_and_the_next_tick_decides_from_it(
    cluster: Emulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    await queue.publish([1200.0] * 4)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    raced: list[int] = []

    def kubectl_scale() -> None:  # someone scales to 2 after the operator read 1
        if not raced:
            raced.append(1)
            cluster.objects[DEPLOYMENTS, NS, TARGET].patch({"spec": {"replicas": 2}})

    cluster.before_scale = kubectl_scale
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))

    async with operator(cluster):
        await eventually(lambda: len(scale_patches(cluster)) >= 2, "a second scale after the conflict")
        await eventually(lambda: events(cluster, "ScaleConflict"), "the Warning event")
        await eventually(
            lambda: cluster.objects[DEPLOYMENTS, NS, TARGET]["spec"]["replicas"] == 4, "the Deployment"
        )

    first, second = _scale_requests(cluster)[:2]
    assert first[0] == {"op": "test", "path": "/spec/replicas", "value": 1}
    assert second[0] == {"op": "test", "path": "/spec/replicas", "value": 2}  # re-read, not overwritten
    assert second[1]["value"] == 4


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "older",
    [{"dryRun": True}, {"queue": {"drainDeadlineSeconds": None}}, {"queue": {"natsUrl": "nats://evil:4222"}}],
    ids=["dry-run", "invalid", "refused-endpoint"],
)
async def test_an_older_autoscaler_that_cannot_act_does_not_block_a_newer_one(
    cluster: kmock.KubernetesEmulator,
    queue: JobQueue,
    nats_url: str,
    prometheus: Prometheus,
    older: dict[str, Any],
) -> None:
    await queue.create()
    await queue.publish([1200.0] * 3)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    old_spec = autoscaler_spec(nats_url, prometheus, **older)
    old_spec["queue"] = {k: v for k, v in old_spec["queue"].items() if v is not None}
    add_autoscaler(cluster, old_spec, name="older")
    cluster.objects[TAS, NS, "older"].patch({"metadata": {"creationTimestamp": _iso(3600)}})
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus), name="newer")
    allowed = ("127.0.0.1",) if "natsUrl" in older.get("queue", {}) else ()

    async with operator(cluster, allowed_endpoints=allowed):
        await eventually(lambda: scale_patches(cluster) == [3], "the newer autoscaler scaling")
        await eventually(lambda: condition(cluster, "ScalingActive", "newer"), "its condition")

    assert condition(cluster, "ScalingActive", "newer")["status"] == "True"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("allowed", [True, False], ids=["on-the-list", "off-the-list"])
async def test_an_endpoint_off_the_allow_list_gets_no_credentials_and_no_query(
    cluster: kmock.KubernetesEmulator,
    queue: JobQueue,
    nats_url: str,
    prometheus: Prometheus,
    allowed: bool,
) -> None:
    """The confused deputy: a spec naming an address the operator should not talk to is refused before
    its Secret is read, so no credentials leave and no answer lands in the status."""
    await queue.create()
    await queue.publish([1200.0] * 2)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))
    entries = ("127.0.0.1",) if allowed else ("nats.escriba.svc.cluster.local:4222", "http://prometheus:9090")

    async with operator(cluster, allowed_endpoints=entries):
        ready = await eventually(lambda: condition(cluster, "Ready") or None, "the Ready condition")
        if allowed:
            await eventually(lambda: scale_patches(cluster) == [2], "the scale")
        else:
            await asyncio.sleep(1.0)  # three timer intervals in which a permitted one would have read

    secret_reads = [r for r in cluster if r.resource == kmock.resource("v1/secrets") and r.method == "GET"]
    if allowed:
        assert ready["status"] == "True" and secret_reads and prometheus.queries
    else:
        assert ready["status"] == "False" and ready["reason"] == "EndpointNotAllowed"
        assert "ESCRIBA_OPERATOR_ALLOWED_ENDPOINTS" in ready["message"]
        assert secret_reads == [] and prometheus.queries == [] and scale_patches(cluster) == []
        assert "backlogSeconds" not in status_of(cluster)


@pytest.mark.timeout(90)
async def test_the_learned_throughput_survives_a_restart(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    await queue.create()
    await queue.publish([600.0] * 10)
    prometheus.series = {"gpu": [50.0]}  # no throughput series yet after the restart
    add_deployment(cluster, replicas=4)
    spec = autoscaler_spec(nats_url, prometheus, queue={"jobOverheadSeconds": 0})
    add_autoscaler(cluster, spec)
    learned = {"value": 25.0, "source": "Measured", "measuredAt": _iso(30)}
    cluster.objects[TAS, NS, "transcription"].patch({"status": {"signals": {"throughput": learned}}})

    async with operator(cluster):
        status = await eventually(
            lambda: status_of(cluster) if status_of(cluster).get("desiredReplicas") else None, "a decision"
        )

    assert status["throughput"] == 25.0  # not the initial 10
    assert status["signals"]["throughput"]["source"] == "Measured"
    assert status["desiredReplicas"] == 4  # 6000 audio-s over 60 s at 25 (at 10 it would be 10)
    assert scale_patches(cluster) == []


@pytest.mark.timeout(90)
async def test_before_a_scale_down_busy_pods_cost_more_to_delete_than_idle_ones(
    cluster: kmock.KubernetesEmulator, queue: JobQueue, nats_url: str, prometheus: Prometheus
) -> None:
    """The ReplicaSet removes the newest pods by default, busy or not (a removed worker hands its
    3-hour job back to start over); with deletion costs from each pod's running jobs, idle ones go first."""
    await queue.create()
    labels = {"app": "transcription"}
    add_deployment(cluster, replicas=3)
    cluster.objects[DEPLOYMENTS, NS, TARGET].patch({"spec": {"selector": {"matchLabels": labels}}})
    for name in ("busy", "idle", "unscraped"):
        cluster.objects["v1/pods", NS, f"{TARGET}-{name}"] = {
            "metadata": {"name": f"{TARGET}-{name}", "namespace": NS, "labels": labels}
        }
    prometheus.series = {
        "gpu": [20.0],
        "throughput": [10.0],
        DEFAULT_SLOTS_QUERY: [4.0],
        DEFAULT_BUSY_SLOTS_QUERY: [8.0],
    }
    prometheus.labelled = {
        DEFAULT_BUSY_BY_POD_QUERY: [({"pod": f"{TARGET}-busy"}, 1.0), ({"pod": f"{TARGET}-idle"}, 0.0)]
    }
    spec = autoscaler_spec(
        nats_url,
        prometheus,
        slots={"prometheusUrl": prometheus.url},
        behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
    )
    add_autoscaler(cluster, spec)

    async with operator(cluster):
        await eventually(lambda: scale_patches(cluster), "the scale-down")

    costs = {
        name: dict(
            cluster.objects["v1/pods", NS, f"{TARGET}-{name}"]["metadata"].get("annotations") or {}
        ).get("controller.kubernetes.io/pod-deletion-cost")
        for name in ("busy", "idle", "unscraped")
    }
    assert costs == {"busy": "100", "idle": "0", "unscraped": "0"}
    requests = [
        r
        for r in cluster
        if r.method == "PATCH" and r.resource in (kmock.resource("v1/pods"), kmock.resource(DEPLOYMENTS))
    ]
    first_scale = next(i for i, r in enumerate(requests) if r.subresource == "scale")
    assert {r.name for r in requests[:first_scale]} == {
        f"{TARGET}-{n}" for n in ("busy", "idle", "unscraped")
    }


@dataclass
class OperatorProcess:
    """``escriba-operator`` as a process of its own, logged in through a kubeconfig."""

    process: subprocess.Popen[bytes]
    metrics_url: str

    async def evaluations(self, http: aiohttp.ClientSession) -> float:
        """Evaluations so far, from the operator's own /metrics (0 while it waits)."""
        try:
            async with http.get(self.metrics_url) as rsp:
                text = await rsp.text()
        except aiohttp.ClientError:
            return -1.0  # not listening yet
        for line in text.splitlines():
            if line.startswith("escriba_autoscaler_evaluation_seconds_count"):
                return float(line.split()[-1])
        return 0.0

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (as the kubelet does)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def operator_process(cluster: kmock.KubernetesEmulator, folder: Path, name: str) -> Iterator[OperatorProcess]:
    kubeconfig = folder / f"{name}.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e", "cluster": {"server": str(cluster.url).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "test"}}],
                "contexts": [{"name": "c", "context": {"cluster": "e", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    metrics_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "POD_ID": name,
        "ESCRIBA_OPERATOR_INTERVAL_S": "0.3",
        "ESCRIBA_OPERATOR_REQUEST_TIMEOUT_S": "2",
        "ESCRIBA_OPERATOR_METRICS_PORT": str(metrics_port),
        "ESCRIBA_OPERATOR_HEALTH_PORT": str(free_port()),
        "ESCRIBA_OPERATOR_BIND_HOST": "127.0.0.1",
        "ESCRIBA_OPERATOR_PEERING_LIFETIME_S": "3",
    }
    with (folder / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "escriba_operator.main"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        running = OperatorProcess(process, f"http://127.0.0.1:{metrics_port}/metrics")
        try:
            yield running
        finally:
            running.stop()


@pytest.mark.timeout(120)
async def test_two_operator_processes_one_acts_and_the_other_takes_over_when_it_stops(
    cluster: kmock.KubernetesEmulator,
    queue: JobQueue,
    nats_url: str,
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    """The chart's two replicas: peering on, no priority given. Exactly one evaluates; when it stops
    (SIGTERM, as in a rollout) the other resumes. With equal priorities kopf pauses both."""
    await queue.create()
    await queue.publish([1200.0] * 2)
    prometheus.series = {"gpu": [50.0], "throughput": [10.0]}
    add_deployment(cluster, replicas=1)
    add_autoscaler(cluster, autoscaler_spec(nats_url, prometheus))
    cluster.objects[PEERINGS, None, "escriba-operator"] = {"metadata": {"name": "escriba-operator"}}

    def peers() -> dict[str, Any]:
        return dict(cluster.objects[PEERINGS, None, "escriba-operator"].get("status") or {})

    async with aiohttp.ClientSession() as http:
        with operator_process(cluster, tmp_path, "first") as first:

            async def acting(replica: OperatorProcess) -> bool:
                return await replica.evaluations(http) > 0

            async def listening(replica: OperatorProcess) -> bool:
                return await replica.evaluations(http) >= 0

            await eventually(lambda: acting(first), "the first replica acting", timeout_s=60)
            with operator_process(cluster, tmp_path, "second") as second:
                await eventually(
                    lambda: len(peers()) == 2, "both replicas in the peering object", timeout_s=60
                )
                await eventually(lambda: listening(second), "the second replica's metrics", timeout_s=60)
                before = await first.evaluations(http)
                await asyncio.sleep(1.5)  # five intervals
                assert await first.evaluations(http) > before  # the first keeps acting...
                assert await second.evaluations(http) == 0  # ...and the second waits
                assert scale_patches(cluster) == [2]

                # A rollout or a node drain takes the acting replica away. kopf 1.45's last keep-alive on
                # SIGTERM can hang (nolar/kopf#1168), so the kubelet's SIGKILL may end it; its peering
                # entry then expires after its lifetime and the other replica resumes.
                first.stop(grace_s=5.0)
                await eventually(lambda: acting(second), "the second replica taking over", timeout_s=30)
                assert scale_patches(cluster) == [2]  # it found the work done, and did not redo it
