"""The site's Kafka broker, secured the way a production cluster is: every listener asks
for a password (SASL/SCRAM-SHA-512 for clients, SASL/PLAIN on the controller's loopback
listener, where KRaft cannot use SCRAM) and KRaft's ``StandardAuthorizer`` allows only what
an ACL grants. Two users exist from the start, both super users: ``admin`` (the person
running the site: ``aiosctl env`` exports its settings) and ``aios-operator`` (the
operator, which creates the other principals and their ACLs). Their passwords are made
once per site and kept, mode 0600, in ``kafka-users.json``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aios.stack import components

KAFKA_PORT, KAFKA_CONTROLLER_PORT = 9092, 9093
MECHANISM = "SCRAM-SHA-512"
ADMIN, OPERATOR = "admin", "aios-operator"


@dataclass(frozen=True)
class SiteUsers:
    """The passwords of the site's two super users."""

    admin: str
    operator: str

    @classmethod
    def ensure(cls, path: Path) -> SiteUsers:
        """The site's users, made on its first start and kept across restarts (the
        broker's metadata holds their SCRAM credentials from the storage format on)."""
        if path.exists():
            return cls(**json.loads(path.read_text()))
        users = cls(admin=secrets.token_urlsafe(24), operator=secrets.token_urlsafe(24))
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(users)))
        return users

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create both users with the metadata."""
        arguments = []
        for name, password in ((ADMIN, self.admin), (OPERATOR, self.operator)):
            arguments += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return arguments


def client_settings(username: str, password: str) -> dict[str, Any]:
    """librdkafka's settings for one user (``AIOS_KAFKA_CONFIG``)."""
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": MECHANISM,
        "sasl.username": username,
        "sasl.password": password,
    }


def java_client_properties(settings: Mapping[str, Any]) -> str:
    """The Java client's properties for one of the site's users, given its librdkafka
    ``settings``: what Kafka's own tools read (``--producer.config``, a properties file)."""
    login = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{settings["sasl.username"]}" password="{settings["sasl.password"]}";'
    )
    return "\n".join(
        [
            f"security.protocol={settings['security.protocol']}",
            f"sasl.mechanism={settings['sasl.mechanism']}",
            f"sasl.jaas.config={login}",
            "",
        ]
    )


def tool_command(main_class: str, *args: str) -> list[str]:
    """Kafka's own tool ``main_class`` (``org.apache.kafka.tools.ProducerPerformance``,
    ``EndToEndLatency``…) on the classpath of the site's Kafka, which holds its tools."""
    libs = components.KAFKA.ensure() / "libs"
    if not list(libs.glob("kafka-tools-*.jar")):
        raise components.ComponentUnavailable(
            f"{libs} lacks Kafka's tools: run hack/obtain.sh kafka (make components does)"
        )
    return ["java", "-Xmx512m", "-cp", f"{libs}/*", main_class, *args]


def broker_properties(address: str, data: Path, users: SiteUsers) -> str:
    """One KRaft node: clients on the node's address (the host and pods alike), the
    controller on the node's loopback; the broker authenticates to both as ``admin``."""
    controller = f"127.0.0.1:{KAFKA_CONTROLLER_PORT}"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    login = f'username="{ADMIN}" password="{users.admin}"'
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{controller}",
            f"listeners=SASL_PLAINTEXT://0.0.0.0:{KAFKA_PORT},CONTROLLER://{controller}",
            f"advertised.listeners=SASL_PLAINTEXT://{address}:{KAFKA_PORT}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            f"{scram} required {login};",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={plain} required {login}"
            f' user_{ADMIN}="{users.admin}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN};User:{OPERATOR}",
            "allow.everyone.if.no.acl.found=false",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=6",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]
    )


BROKER_LOG4J = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def kafka_ready(bootstrap: str, settings: dict[str, Any]) -> bool:
    """The broker answers an authenticated metadata request."""
    from confluent_kafka.admin import AdminClient

    # log_level 0: connection refusals while the broker starts are expected, not news
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0, **settings}
    )
    metadata = admin.list_topics(timeout=2)
    return len(metadata.brokers) > 0
