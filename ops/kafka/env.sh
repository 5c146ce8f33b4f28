# Shared settings for ops/kafka/start and ops/kafka/stop (sourced, not run).
KAFKA_OPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_OPS_DIR/../.." && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_OPS_DIR/pom.xml")"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-.kafka-data}"
# A relative data dir is relative to the repository root, wherever the script is called from.
case "$KAFKA_DATA_DIR" in /*) ;; *) KAFKA_DATA_DIR="$REPO_ROOT/$KAFKA_DATA_DIR" ;; esac
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_LIB="$KAFKA_OPS_DIR/lib"
KAFKA_PIDFILE="$KAFKA_DATA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DATA_DIR/logs/server.log"
