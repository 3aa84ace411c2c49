#!/usr/bin/env bash
# kafka-local.sh - a real single-node Apache Kafka 4.x broker (KRaft, broker+controller in
# one JVM) for development and CI. No Docker: the jars come from Maven Central.
#
#   scripts/kafka-local.sh start | stop | status | logs [-f] | reset | --help
#
# Layout (all under <repo>/.cache/kafka/, ignored by git):
#   libs-<version>/        runtime classpath resolved once by Maven (.complete = stamp)
#   run/server.properties  broker config, regenerated on every start
#   run/data/              KRaft metadata + topic data (formatted on first start)
#   run/kafka.pid          PID of the broker this script started
#   run/logs/server.log    broker log (Log4j 2); run/logs/console.log = JVM stdout/stderr
#   tls/                   dev CA + broker keystore for the SSL listener (made once by keytool);
#                          tls/ca.pem is the CA for clients (DWCP_SSL_CAFILE / ssl_cafile)
#
# Listeners (all on 127.0.0.1):
#   PLAINTEXT       KAFKA_PORT        no auth; the principal is User:ANONYMOUS (a super user)
#   CONTROLLER      KAFKA_CONTROLLER_PORT  KRaft controller, PLAINTEXT, broker-internal
#   SASL_PLAINTEXT  KAFKA_SASL_PORT   SASL mechanism PLAIN, fixed dev credentials:
#                     dwcp   / dwcp-secret    super user: may do everything
#                     reader / reader-secret  authenticates, but has no ACL at all, so every
#                                             topic/group request fails with an authorization
#                                             error (for testing those errors)
#   SSL             KAFKA_SSL_PORT    TLS, server certificate only (no client certificates);
#                                     principal User:ANONYMOUS. Verify with tls/ca.pem; the
#                                     certificate is for IP 127.0.0.1 and DNS localhost.
# Why PLAIN and not SCRAM-SHA-512: in KRaft, SCRAM credentials live in the cluster metadata and
# must be added with `StorageTool format --add-scram` (or kafka-configs against a running
# broker); an already formatted data dir has none, so every existing checkout would need a
# `reset`. PLAIN keeps the users in server.properties (JAAS), rewritten on every start, so the
# listener works on old and new data dirs alike. These are dev credentials, in clear text here.
# Authorization: KRaft's StandardAuthorizer with super.users=User:ANONYMOUS;User:dwcp, so
# PLAINTEXT, SSL, the controller and dwcp are unaffected, and no ACL is needed by anyone else.
#
# Environment:
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1   (default 9092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener on 127.0.0.1  (default 9093)
#   KAFKA_SASL_PORT        SASL_PLAINTEXT listener (PLAIN)   (default 9094)
#   KAFKA_SSL_PORT         SSL listener                      (default 9095)
#   KAFKA_HEAP_OPTS        JVM heap                          (default "-Xms512m -Xmx1g")
#   KAFKA_OPTS             extra JVM options                 (default none)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness     (default 60)
#   KAFKA_VERSION          org.apache.kafka version          (default: <kafka.version> in pom.xml)
#   KAFKA_CACHE_DIR        state + jar cache                 (default <repo>/.cache/kafka)
#   JAVA_HOME              Java 17+ to use                   (default: java on PATH)
#
# Progress and errors go to stderr; `status` prints its one-line answer to stdout.
set -euo pipefail

# --- configuration -------------------------------------------------------------------

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
POM=$SCRIPT_DIR/kafka/pom.xml
LOG4J_CONF=$SCRIPT_DIR/kafka/log4j2.properties

# The Kafka version has one source of truth: <kafka.version> in scripts/kafka/pom.xml.
KAFKA_VERSION=${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)}
[[ -n $KAFKA_VERSION ]] || { echo "kafka-local: ERROR: no <kafka.version> in $POM" >&2; exit 1; }
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-9094}
KAFKA_SSL_PORT=${KAFKA_SSL_PORT:-9095}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}
KAFKA_OPTS=${KAFKA_OPTS:-}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
KAFKA_STOP_TIMEOUT=30
HOST=127.0.0.1 # bind and advertise loopback only
BOOTSTRAP="$HOST:$KAFKA_PORT"

CACHE_DIR=${KAFKA_CACHE_DIR:-$REPO_ROOT/.cache/kafka}
LIBS_DIR=$CACHE_DIR/libs-$KAFKA_VERSION
RUN_DIR=$CACHE_DIR/run
DATA_DIR=$RUN_DIR/data
LOG_DIR=$RUN_DIR/logs
PROPS=$RUN_DIR/server.properties
PID_FILE=$RUN_DIR/kafka.pid
SERVER_LOG=$LOG_DIR/server.log
CONSOLE_LOG=$LOG_DIR/console.log
TLS_DIR=$CACHE_DIR/tls
KEYSTORE=$TLS_DIR/broker.p12
CA_PEM=$TLS_DIR/ca.pem
TLS_PASS=dwcp-tls-dev # keystore password of the dev keystore (not a secret)

# The SASL PLAIN dev users (see the header). user_<name>="<password>" in the JAAS config.
SASL_USER=dwcp
SASL_PASSWORD=dwcp-secret
SASL_READER=reader
SASL_READER_PASSWORD=reader-secret

# Log line the broker writes once every listener is up (KafkaRaftServer, Kafka 4.x).
READY_LINE="Kafka Server started"

# --- helpers -------------------------------------------------------------------------

log() { printf 'kafka-local: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

usage() {
    cat <<EOF
Usage: scripts/kafka-local.sh COMMAND

Run a single-node Apache Kafka $KAFKA_VERSION broker (KRaft, no Docker) on $HOST.

Commands:
  start         Resolve jars (first time only), format storage (first time only) and start
                the broker in the background; wait until it answers on $BOOTSTRAP
                and on its SASL and SSL listeners.
                No-op if our broker is already running. Refuses if the port is taken by
                a process this script did not start.
  stop          SIGTERM the broker we started (SIGKILL after ${KAFKA_STOP_TIMEOUT}s). No-op if not running.
  status        Print running/stopped with pid, bootstrap address and listeners.
                Exit 0 if running, 3 if not.
  logs [-f]     Show the last 200 lines of the broker log (-f: follow).
  reset         Stop the broker and delete its data ($RUN_DIR); keeps the jars.
  -h, --help    Show this help.

Listeners on $HOST:
  PLAINTEXT       :$KAFKA_PORT   no authentication (User:ANONYMOUS, super user)
  CONTROLLER      :$KAFKA_CONTROLLER_PORT   KRaft controller (broker-internal)
  SASL_PLAINTEXT  :$KAFKA_SASL_PORT   SASL PLAIN; users $SASL_USER/$SASL_PASSWORD (super user) and
                         $SASL_READER/$SASL_READER_PASSWORD (no ACLs: authorization errors)
  SSL             :$KAFKA_SSL_PORT   TLS; CA for clients: $CA_PEM
The StandardAuthorizer is on with super.users=User:ANONYMOUS;User:$SASL_USER.

Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_SASL_PORT (9094),
KAFKA_SSL_PORT (9095), KAFKA_HEAP_OPTS ("-Xms512m -Xmx1g"), KAFKA_OPTS, KAFKA_START_TIMEOUT
(60), KAFKA_VERSION ($KAFKA_VERSION), KAFKA_CACHE_DIR (<repo>/.cache/kafka), JAVA_HOME.
EOF
}

# Serialise start/stop/reset (e.g. two test sessions starting the broker at once).
# flock is util-linux only; without it we simply run unlocked.
take_lock() {
    mkdir -p "$CACHE_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CACHE_DIR/.lock"
        flock -w 900 9 || die "timed out waiting for the lock $CACHE_DIR/.lock"
    fi
}

# Pick a Java 17+ runtime into $JAVA.
find_java() {
    if [[ -n ${JAVA_HOME:-} ]]; then JAVA=$JAVA_HOME/bin/java; else JAVA=java; fi
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install a JDK 17+ or set JAVA_HOME)"
    local major
    major=$("$JAVA" -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p')
    [[ ${major:-0} -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found: $("$JAVA" -version 2>&1 | head -n1)"
}

# Download the broker's runtime classpath into $LIBS_DIR, once. The stamp file holds a
# checksum of pom.xml: a half-finished download (no stamp) or an edited pom is redone.
ensure_jars() {
    local want
    want="$KAFKA_VERSION $(cksum <"$POM")"
    if [[ -f $LIBS_DIR/.complete && $(cat "$LIBS_DIR/.complete") == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn (Maven) not found; it is needed once to download the Kafka jars"

    local tmp=$LIBS_DIR.tmp.$$ mvn_log=$CACHE_DIR/mvn.log t0=$SECONDS
    rm -rf "$LIBS_DIR" "$tmp"
    log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR (first run only) ..."
    if ! mvn -B -q -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$mvn_log" 2>&1; then
        tail -n 40 "$mvn_log" >&2 || true
        rm -rf "$tmp"
        die "Maven could not resolve the Kafka jars (full output: $mvn_log)"
    fi
    [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || {
        rm -rf "$tmp"
        die "kafka_2.13-$KAFKA_VERSION.jar missing after Maven ran (see $mvn_log)"
    }
    printf '%s\n' "$want" >"$tmp/.complete"
    mv "$tmp" "$LIBS_DIR"
    log "jars ready: $(find "$LIBS_DIR" -name '*.jar' | wc -l | tr -d ' ') jars," \
        "$(du -sh "$LIBS_DIR" | cut -f1), $((SECONDS - t0))s"
}

# Run a Kafka CLI class (StorageTool, ...) on our classpath; its logging goes to tools.log.
run_tool() {
    mkdir -p "$LOG_DIR"
    "$JAVA" -Xmx256m -cp "$LIBS_DIR/*" \
        -Dlog4j2.configurationFile="$LOG4J_CONF" \
        -Dkafka.logs.dir="$LOG_DIR" -Dkafka.log.file=tools.log \
        "$@"
}

# Print the saved PID if it belongs to a live broker that THIS script started (checked via
# its command line, so a recycled PID is never mistaken for ours); return 1 otherwise.
our_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(tr -dc '0-9' <"$PID_FILE")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local args
    args=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
    [[ $args == *kafka.Kafka*"$PROPS"* ]] || return 1
    echo "$pid"
}

# Is anything at all listening on 127.0.0.1:PORT?
port_in_use() {
    if command -v timeout >/dev/null 2>&1; then
        timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
    else
        (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
    fi
}

# Best-effort description of who listens on a port (for error messages).
who_listens() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$1" 2>/dev/null || true
    elif command -v lsof >/dev/null 2>&1; then
        lsof -nP -iTCP:"$1" -sTCP:LISTEN 2>/dev/null || true
    fi
}

# Does a Kafka broker answer on $HOST:PORT (default $KAFKA_PORT)? Sends a real ApiVersions
# request (v0) with python3's standard library (~50 ms); a SASL listener answers it before
# authentication too. Falls back to Kafka's BrokerApiVersionsCommand (a JVM start, a few
# seconds) where python3 is missing (PLAINTEXT port only; other ports: a TCP connect).
kafka_answers() {
    local port=${1:-$KAFKA_PORT}
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$HOST" "$port" <<'PY'
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client_id = b"kafka-local"
# Request header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id.
body = struct.pack(">hhih", 18, 0, 4242, len(client_id)) + client_id
try:
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(3)
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 10:  # size(4) + correlation_id(4) + error_code(2)
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(1)
            buf += chunk
except OSError:
    sys.exit(1)
_size, corr, err = struct.unpack(">iih", buf[:10])
sys.exit(0 if corr == 4242 and err == 0 else 1)
PY
    elif [[ $port == "$KAFKA_PORT" ]]; then
        run_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
            --bootstrap-server "$BOOTSTRAP" >/dev/null 2>&1
    else
        port_in_use "$port"
    fi
}

# Every client listener answers: PLAINTEXT and SASL with ApiVersions, SSL with a TCP connect
# (a TLS handshake needs more than bash and the standard library guarantee).
all_listeners_answer() {
    kafka_answers && kafka_answers "$KAFKA_SASL_PORT" && port_in_use "$KAFKA_SSL_PORT"
}

# Show the end of the logs after a failed start.
show_log_tail() {
    if [[ -s $SERVER_LOG ]]; then
        log "last 40 lines of $SERVER_LOG:"
        tail -n 40 "$SERVER_LOG" >&2
    fi
    if [[ -s $CONSOLE_LOG ]]; then
        log "last 40 lines of $CONSOLE_LOG (JVM stdout/stderr):"
        tail -n 40 "$CONSOLE_LOG" >&2
    fi
}

# SIGTERM our broker, wait, SIGKILL if it hangs; remove the pid file.
terminate() {
    local pid=$1 waited=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= KAFKA_STOP_TIMEOUT * 2)); then
            log "WARNING: broker (pid $pid) still alive after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
}

# Wait until the broker logged READY_LINE and answers a Kafka request.
wait_ready() {
    local pid=$1 deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            show_log_tail
            die "the broker (pid $pid) exited during startup"
        fi
        if grep -q "$READY_LINE" "$SERVER_LOG" 2>/dev/null && all_listeners_answer; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            log "broker not ready after ${KAFKA_START_TIMEOUT}s (KAFKA_START_TIMEOUT); stopping it"
            terminate "$pid"
            exit 1
        fi
        sleep 0.5
    done
}

# (Re)write server.properties from the current environment (ports may change between runs).
write_properties() {
    cat >"$PROPS" <<EOF
# Generated by scripts/kafka-local.sh on every start; edits are overwritten.
# Single combined broker+controller node, loopback only, for dev and CI.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,SSL://$HOST:$KAFKA_SSL_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,SSL://$HOST:$KAFKA_SSL_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
log.dirs=$DATA_DIR

# SASL_PLAINTEXT: mechanism PLAIN with fixed dev users (user_<name>="<password>").
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD" user_$SASL_READER="$SASL_READER_PASSWORD";

# SSL: server certificate from the dev CA in $TLS_DIR; clients are not asked for one.
listener.name.ssl.ssl.keystore.type=PKCS12
listener.name.ssl.ssl.keystore.location=$KEYSTORE
listener.name.ssl.ssl.keystore.password=$TLS_PASS
listener.name.ssl.ssl.key.password=$TLS_PASS
listener.name.ssl.ssl.client.auth=none

# Authorization: ACLs in the KRaft metadata; ANONYMOUS (PLAINTEXT, SSL, the controller) and
# dwcp may do everything, anyone else (reader) nothing, as no ACL is ever created.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$SASL_USER
allow.everyone.if.no.acl.found=false

# One node: every internal topic has replication factor 1 / min ISR 1, and few partitions
# (the defaults of 50 only slow down the first consumer-group join).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Test friendliness: consumer groups rebalance immediately; tests create their own topics.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=1
EOF
}

# Format KRaft storage once (a fresh random cluster id). A data dir without meta.properties
# is a half-finished format and is redone.
ensure_formatted() {
    [[ -f $DATA_DIR/meta.properties ]] && return 0
    rm -rf "$DATA_DIR"
    local cluster_id
    cluster_id=$(run_tool kafka.tools.StorageTool random-uuid | tail -n1)
    [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid gave an unexpected id: '$cluster_id'"
    log "formatting KRaft storage in $DATA_DIR (cluster id $cluster_id)"
    # Static quorum (controller.quorum.voters) => format WITHOUT --standalone.
    run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >&2 ||
        die "formatting storage failed (see $LOG_DIR/tools.log)"
    echo "$cluster_id" >"$RUN_DIR/cluster.id"
}

# Make the SSL listener's dev CA and broker keystore once, with Java's keytool: a CA key pair,
# a broker key pair whose certificate the CA signs (SAN IP:127.0.0.1, DNS:localhost), both in
# one PKCS12 keystore; the CA certificate is exported as PEM for clients. A half-made
# directory (no ca.pem) is redone.
ensure_tls() {
    [[ -f $CA_PEM && -f $KEYSTORE ]] && return 0
    local keytool=keytool
    [[ -n ${JAVA_HOME:-} ]] && keytool=$JAVA_HOME/bin/keytool
    command -v "$keytool" >/dev/null 2>&1 || die "keytool not found (it comes with the JDK)"
    local tmp=$TLS_DIR.tmp.$$ kt_log=$LOG_DIR/keytool.log
    rm -rf "$tmp" && mkdir -p "$tmp"
    log "making the dev CA and broker keystore for the SSL listener in $TLS_DIR (first run only)"
    local ks=$tmp/broker.p12 opts=(-storetype PKCS12 -storepass "$TLS_PASS" -keypass "$TLS_PASS")
    {
        "$keytool" -genkeypair -keystore "$tmp/ca.p12" "${opts[@]}" -alias ca -keyalg RSA \
            -keysize 2048 -validity 3650 -dname "CN=dwcp-stream dev CA" -ext bc:c &&
            "$keytool" -exportcert -keystore "$tmp/ca.p12" -storepass "$TLS_PASS" -alias ca \
                -rfc -file "$tmp/ca.pem" &&
            "$keytool" -genkeypair -keystore "$ks" "${opts[@]}" -alias broker -keyalg RSA \
                -keysize 2048 -validity 3650 -dname "CN=localhost" &&
            "$keytool" -certreq -keystore "$ks" -storepass "$TLS_PASS" -alias broker \
                -file "$tmp/broker.csr" &&
            "$keytool" -gencert -keystore "$tmp/ca.p12" -storepass "$TLS_PASS" -alias ca \
                -infile "$tmp/broker.csr" -outfile "$tmp/broker.crt" -rfc -validity 3650 \
                -ext "SAN=IP:$HOST,DNS:localhost" -ext KU=digitalSignature,keyEncipherment \
                -ext EKU=serverAuth &&
            "$keytool" -importcert -noprompt -keystore "$ks" -storepass "$TLS_PASS" -alias ca \
                -file "$tmp/ca.pem" &&
            "$keytool" -importcert -noprompt -keystore "$ks" -storepass "$TLS_PASS" \
                -alias broker -file "$tmp/broker.crt"
    } >"$kt_log" 2>&1 || {
        tail -n 20 "$kt_log" >&2
        rm -rf "$tmp"
        die "keytool failed (full output: $kt_log)"
    }
    rm -f "$tmp/broker.csr" "$tmp/ca.p12" # the CA key is not needed again
    rm -rf "$TLS_DIR"
    mv "$tmp" "$TLS_DIR"
}

# --- commands ------------------------------------------------------------------------

cmd_start() {
    take_lock
    mkdir -p "$RUN_DIR" "$LOG_DIR"

    local pid
    if pid=$(our_pid); then
        wait_ready "$pid"
        log "already running (pid $pid) on $BOOTSTRAP"
        return 0
    fi
    if [[ -f $PID_FILE ]]; then
        log "removing stale pid file (pid $(cat "$PID_FILE") is not running)"
        rm -f "$PID_FILE"
    fi

    # Never clobber a broker (or anything else) we did not start.
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT" "$KAFKA_SSL_PORT"; do
        if port_in_use "$port"; then
            who_listens "$port" >&2
            die "port $port on $HOST is already in use by a process this script did not start" \
                "(no live pid in $PID_FILE). Refusing to start. Stop that process, or choose" \
                "other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT / KAFKA_SSL_PORT."
        fi
    done

    find_java
    ensure_jars
    ensure_tls
    write_properties
    ensure_formatted

    # Keep the previous run's logs once; a fresh server.log also means READY_LINE can only
    # come from this run.
    [[ -f $SERVER_LOG ]] && mv -f "$SERVER_LOG" "$SERVER_LOG.1"
    [[ -f $CONSOLE_LOG ]] && mv -f "$CONSOLE_LOG" "$CONSOLE_LOG.1"

    log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$KAFKA_CONTROLLER_PORT," \
        "SASL_PLAINTEXT $HOST:$KAFKA_SASL_PORT, SSL $HOST:$KAFKA_SSL_PORT) ..."
    local t0=$SECONDS
    # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS / KAFKA_OPTS are word lists on purpose
    nohup "$JAVA" $KAFKA_HEAP_OPTS \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONF" \
        -Dkafka.logs.dir="$LOG_DIR" -Dkafka.log.file=server.log \
        $KAFKA_OPTS \
        -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS" \
        </dev/null >"$CONSOLE_LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"

    wait_ready "$pid"
    log "ready: Kafka $KAFKA_VERSION on $BOOTSTRAP (pid $pid, $((SECONDS - t0))s);" \
        "SASL_PLAINTEXT $HOST:$KAFKA_SASL_PORT, SSL $HOST:$KAFKA_SSL_PORT (CA $CA_PEM)"
}

cmd_stop() {
    take_lock
    local pid
    if ! pid=$(our_pid); then
        if [[ -f $PID_FILE ]]; then
            log "not running (removing stale pid file)"
            rm -f "$PID_FILE"
        else
            log "not running"
        fi
        return 0
    fi
    log "stopping broker (pid $pid) ..."
    terminate "$pid"
    log "stopped"
}

cmd_status() {
    local pid
    if pid=$(our_pid); then
        if all_listeners_answer; then
            echo "running (pid $pid), bootstrap $BOOTSTRAP, sasl_plaintext $HOST:$KAFKA_SASL_PORT, ssl $HOST:$KAFKA_SSL_PORT"
        elif kafka_answers; then
            echo "running (pid $pid), bootstrap $BOOTSTRAP - SASL/SSL listeners not answering"
        else
            echo "running (pid $pid), bootstrap $BOOTSTRAP - not answering yet"
        fi
        return 0
    fi
    if port_in_use "$KAFKA_PORT"; then
        echo "stopped (but a process not started by this script listens on $BOOTSTRAP)"
    else
        echo "stopped"
    fi
    return 3
}

cmd_logs() {
    [[ -f $SERVER_LOG ]] || die "no log yet ($SERVER_LOG)"
    if [[ ${1:-} == -f ]]; then
        exec tail -n 200 -f "$SERVER_LOG"
    fi
    tail -n 200 "$SERVER_LOG"
}

cmd_reset() {
    cmd_stop
    log "deleting $RUN_DIR (jars in $LIBS_DIR are kept)"
    rm -rf "$RUN_DIR"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
logs) cmd_logs "${2:-}" ;;
reset) cmd_reset ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
