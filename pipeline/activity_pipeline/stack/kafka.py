"""Apache Kafka of the local stack: jar download with Maven, KRaft storage format, start,
health and stop of one combined broker and controller.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import structlog

from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.procs import (
    pid_matches,
    read_pid_file,
    require_tool,
    run_command,
    run_install_step,
    spawn_detached,
    stop_process_group,
    tcp_connectable,
    wait_until_healthy,
)
from activity_pipeline.stack.service import Service
from activity_pipeline.stack.settings import (
    KAFKA_CONTROLLER_PORT_ENV,
    KAFKA_PORT_ENV,
    StackSettings,
)
from activity_pipeline.stack.versions import (
    KAFKA_ARTIFACT,
    KAFKA_GROUP_ID,
    KAFKA_VERSION,
    LOG4J_SLF4J_ARTIFACT,
    LOG4J_SLF4J_GROUP_ID,
    LOG4J_VERSION,
)

__all__ = ["KafkaService", "render_server_properties"]

log = structlog.get_logger(__name__)

JAVA_INSTALL_HINT = "install OpenJDK 17 (apt-get install -y openjdk-17-jre-headless)"
MAVEN_INSTALL_HINT = "install Maven (apt-get install -y maven)"

# Kafka 4 brokers need Java 17 or newer.
MIN_JAVA_MAJOR = 17
# Matches `version "17.0.15"` and the old form `version "1.8.0_392"` of `java -version`.
JAVA_VERSION_PATTERN = re.compile(r'version "(\d+)(?:\.(\d+))?')

# Kafka 4.1.1 with its runtime dependencies and the SLF4J bridge resolves to 46 jars; far
# fewer means Maven stopped early.
MIN_JAR_COUNT = 40
REQUIRED_JARS = (
    f"{KAFKA_ARTIFACT}-{KAFKA_VERSION}.jar",
    f"kafka-clients-{KAFKA_VERSION}.jar",
    f"{LOG4J_SLF4J_ARTIFACT}-{LOG4J_VERSION}.jar",
)

# Version of maven-dependency-plugin used for copy-dependencies, pinned because Maven's
# built-in default (2.8 in Maven 3.8) differs between Maven releases.
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

# Maven downloads the 43 MB of broker jars plus its plugins on a machine with an empty ~/.m2.
MAVEN_TIMEOUT_S = 900.0

# `java -version` starts a JVM, which takes well under a second.
JAVA_VERSION_TIMEOUT_S = 30.0

# StorageTool starts a JVM and writes a few small files.
FORMAT_TIMEOUT_S = 120.0

# JVM start-up, log recovery and the KRaft leader election of a single node take 3-15 s on
# two cores. Recovery after an unclean stop can take much longer, so the limit is generous.
START_TIMEOUT_S = 180.0

# A controlled shutdown flushes every partition and writes a clean-shutdown marker.
STOP_GRACE_S = 60.0

# A running local broker returns metadata within milliseconds.
METADATA_TIMEOUT_S = 5.0

# Heap of the broker: enough for a development and benchmark load of a few thousand
# messages per second, small enough to leave room for the other services.
JVM_HEAP = "768m"

PROCESS_MARKER = "kafka.Kafka"


def render_server_properties(settings: StackSettings, data_dir: Path) -> str:
    """Return server.properties of a single KRaft node that is both broker and controller."""
    host = settings.host
    return "\n".join(
        [
            "# Written by `activity stack up` on every start; edits are overwritten.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={host}:{settings.kafka_controller_port}",
            f"listeners=PLAINTEXT://{host}:{settings.kafka_port},"
            f"CONTROLLER://{host}:{settings.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{settings.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=6",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def _random_cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding. Ids with a "-"
    # are skipped because a leading "-" reads as a command-line option; Kafka's own
    # Uuid.randomUuid skips them too.
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if "-" not in encoded:
            return encoded


def _render_pom() -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.activity</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{KAFKA_GROUP_ID}</groupId>
      <artifactId>{KAFKA_ARTIFACT}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>{LOG4J_SLF4J_GROUP_ID}</groupId>
      <artifactId>{LOG4J_SLF4J_ARTIFACT}</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


class KafkaService(Service):
    """Kafka broker and KRaft controller in one JVM, with data in `.stack/kafka/data`."""

    name = "kafka"
    port_env_vars = (KAFKA_PORT_ENV, KAFKA_CONTROLLER_PORT_ENV)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.kafka_port, self.settings.kafka_controller_port)

    @property
    def libs_dir(self) -> Path:
        """Cached folder of the broker's classpath jars."""
        return self.settings.kafka_cache_dir / "libs"

    @property
    def _installed_marker(self) -> Path:
        # Written only after a complete download, so an interrupted one is retried.
        return self.settings.kafka_cache_dir / "libs.complete"

    @property
    def work_dir(self) -> Path:
        """Folder of the broker's generated configuration and its data folder."""
        return self.settings.stack_dir / "kafka"

    @property
    def data_dir(self) -> Path:
        """Kafka `log.dirs` folder: topic partitions and KRaft metadata."""
        return self.work_dir / "data"

    @property
    def properties_file(self) -> Path:
        """Generated server.properties."""
        return self.work_dir / "server.properties"

    @property
    def _pid_file(self) -> Path:
        return self.settings.stack_dir / "kafka.pid"

    @property
    def _stdout_file(self) -> Path:
        # The broker's own log goes to kafka.log through log4j2; the JVM's console output,
        # such as start-up failures before logging is set up, goes here.
        return self.settings.logs_dir / "kafka.stdout.log"

    @property
    def _log4j_config(self) -> Path:
        return self.settings.deploy_dir / "kafka" / "log4j2.yaml"

    # -- install ----------------------------------------------------------------------------

    def install(self) -> None:
        java = require_tool("java", JAVA_INSTALL_HINT)
        _check_java_major(java)
        if self._installed_marker.is_file() and self.libs_dir.is_dir():
            return

        mvn = require_tool("mvn", MAVEN_INSTALL_HINT)
        partial_dir = self.settings.kafka_cache_dir / "libs.partial"
        shutil.rmtree(partial_dir, ignore_errors=True)
        partial_dir.parent.mkdir(parents=True, exist_ok=True)
        self._download_jars(mvn, partial_dir)
        jar_names = self._verify_jars(partial_dir)

        # Move the complete folder into place before writing the marker, so an interruption
        # at any point leaves no marker and the next `up` downloads again.
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        partial_dir.rename(self.libs_dir)
        self._installed_marker.write_text("\n".join(jar_names) + "\n", encoding="utf-8")
        log.info("kafka_jars_installed", jars=len(jar_names), libs_dir=str(self.libs_dir))

    @property
    def _install_log(self) -> Path:
        return self.settings.logs_dir / "install-kafka.log"

    def _download_jars(self, mvn: str, output_dir: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="activity-kafka-pom-") as pom_dir:
            pom_file = Path(pom_dir) / "pom.xml"
            pom_file.write_text(_render_pom(), encoding="utf-8")
            run_install_step(
                [
                    mvn,
                    "--quiet",
                    "--batch-mode",
                    f"--file={pom_file}",
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={output_dir}",
                ],
                step=f"download Kafka {KAFKA_VERSION} jars from Maven Central",
                log_file=self._install_log,
                timeout_s=MAVEN_TIMEOUT_S,
            )

    def _verify_jars(self, jar_dir: Path) -> list[str]:
        jar_names = sorted(path.name for path in jar_dir.glob("*.jar"))
        missing = [name for name in REQUIRED_JARS if name not in jar_names]
        if len(jar_names) < MIN_JAR_COUNT or missing:
            raise StackError(
                f"Maven copied {len(jar_names)} jars to {jar_dir}, expected at least "
                f"{MIN_JAR_COUNT} including {', '.join(REQUIRED_JARS)} (missing: "
                f"{', '.join(missing) or 'none'}): read {self._install_log} and run up again"
            )
        return jar_names

    # -- state ------------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        pid = read_pid_file(self._pid_file)
        if pid is None or not pid_matches(pid, PROCESS_MARKER):
            return None
        return pid

    def is_healthy(self) -> bool:
        if not tcp_connectable(self.settings.host, self.settings.kafka_port):
            return False
        return _broker_answers_metadata(self.settings.kafka_bootstrap_servers)

    # -- start ------------------------------------------------------------------------------

    def _jvm_command(self, java: str, main_class: str, *arguments: str) -> list[str]:
        return [
            java,
            f"-Xmx{JVM_HEAP}",
            f"-Xms{JVM_HEAP}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j_config}",
            f"-Dkafka.logs.dir={self.settings.logs_dir}",
            "-cp",
            # The JVM expands a trailing `*` in a classpath entry to every jar of the folder.
            f"{self.libs_dir}/*",
            main_class,
            *arguments,
        ]

    def _format_storage(self, java: str) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = _random_cluster_id()
        log.info("kafka_storage_format_started", cluster_id=cluster_id, data_dir=str(self.data_dir))
        run_command(
            self._jvm_command(
                java,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                f"--config={self.properties_file}",
                "--standalone",
            ),
            description="kafka-storage format",
            timeout_s=FORMAT_TIMEOUT_S,
            cwd=self.work_dir,
        )

    def start(self) -> None:
        java = require_tool("java", JAVA_INSTALL_HINT)
        if not self._log4j_config.is_file():
            raise StackError(
                f"Kafka logging configuration {self._log4j_config} is missing: "
                "restore deploy/kafka/log4j2.yaml from the repository"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(
            render_server_properties(self.settings, self.data_dir), encoding="utf-8"
        )
        self._format_storage(java)
        pid = spawn_detached(
            self._jvm_command(java, PROCESS_MARKER, str(self.properties_file)),
            log_file=self._stdout_file,
            pid_file=self._pid_file,
            cwd=self.work_dir,
        )
        log.info("kafka_process_started", pid=pid, port=self.settings.kafka_port)
        wait_until_healthy(
            service=self.name,
            probe=self.is_healthy,
            alive=lambda: self.running_pid() is not None,
            timeout_s=START_TIMEOUT_S,
            log_file=self.log_file,
            console_log_file=self._stdout_file,
        )

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            stop_process_group(pid, service=self.name, grace_s=STOP_GRACE_S)
        self._pid_file.unlink(missing_ok=True)


def _check_java_major(java: str) -> None:
    version_text = _java_version_text(java)
    match = JAVA_VERSION_PATTERN.search(version_text)
    if match is None:
        log.warning("java_version_unknown", java=java, output=version_text.strip()[:200])
        return
    major = int(match.group(1))
    # Java 8 and older report "1.8", where the second number is the major version.
    if major == 1 and match.group(2) is not None:
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise StackError(
            f"{java} is Java {major}, but Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} "
            f"or newer: {JAVA_INSTALL_HINT} and put it first on PATH"
        )


def _java_version_text(java: str) -> str:
    # `java -version` prints to stderr, so both streams are returned.
    try:
        completed = subprocess.run(
            [java, "-version"],
            capture_output=True,
            text=True,
            timeout=JAVA_VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"`{java} -version` timed out after {JAVA_VERSION_TIMEOUT_S:.0f} s: "
            "check the Java installation"
        ) from exc
    return completed.stdout + completed.stderr


def _broker_answers_metadata(bootstrap_servers: str) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap_servers,
            # librdkafka logs each refused connection at level 3 (error); a broker that is
            # still starting is expected here, so only critical messages are printed.
            "log_level": 2,
        }
    )
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT_S)
    except KafkaException:
        return False
    return len(metadata.brokers) > 0
