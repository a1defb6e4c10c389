"""Pinned versions and coordinates of the third-party services that the local stack runs.

Changing a version here changes the cache folder name, so the next `up` installs the new
version next to the old one instead of mixing files of both.
"""

from __future__ import annotations

__all__ = [
    "CENTRIFUGO_GO_PACKAGE",
    "CENTRIFUGO_VERSION",
    "KAFKA_ARTIFACT",
    "KAFKA_GROUP_ID",
    "KAFKA_VERSION",
    "LOG4J_SLF4J_ARTIFACT",
    "LOG4J_SLF4J_GROUP_ID",
    "LOG4J_VERSION",
    "POSTGRES_APT_PACKAGE",
    "POSTGRES_MAJOR_VERSION",
]

# PostgreSQL comes from the Debian bookworm package of this major version.
POSTGRES_MAJOR_VERSION = 15
POSTGRES_APT_PACKAGE = f"postgresql-{POSTGRES_MAJOR_VERSION}"

# Apache Kafka broker jars, resolved with their runtime dependencies from Maven Central.
KAFKA_VERSION = "4.1.1"
KAFKA_GROUP_ID = "org.apache.kafka"
KAFKA_ARTIFACT = "kafka_2.13"

# Kafka 4.1.1 logs through SLF4J 1.7 and ships log4j-core 2.24.3 but no SLF4J binding,
# so the broker needs this bridge (same version as log4j-core) to write any log lines.
LOG4J_VERSION = "2.24.3"
LOG4J_SLF4J_GROUP_ID = "org.apache.logging.log4j"
LOG4J_SLF4J_ARTIFACT = "log4j-slf4j-impl"

# Centrifugo is built from source with `go install` at this module version.
CENTRIFUGO_VERSION = "v6.9.1"
CENTRIFUGO_GO_PACKAGE = "github.com/centrifugal/centrifugo/v6"
