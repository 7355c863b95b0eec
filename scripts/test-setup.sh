#!/usr/bin/env bash
# Installs the real servers that the integration tests launch (test/helpers/*.ts).
#
#   npm run test:setup          (or: bash scripts/test-setup.sh)
#
# Idempotent and cached: everything it builds or downloads goes under
# ${OFEVENTS_CACHE:-$HOME/.cache/ofevents}, never into the checkout. A second run only checks and
# prints. The helpers look up binaries in "$CACHE/bin" first, then PATH (test/helpers/server.ts,
# cacheDir()).
#
# Cache layout:
#   $CACHE/bin/<tool>             symlinks to the pinned builds below (what the helpers use)
#   $CACHE/nats-server-<ver>/     nats-server built with `go install`
#   $CACHE/kafka-<ver>/pom.xml    written by this script; libs/ holds the broker's jars
#   $CACHE/m2/                    Maven local repository used for the Kafka jars
#   $CACHE/go/{mod,build}/        Go module and build caches
#
# Needs: apt (root or sudo) for the Debian packages, java >= 17 and mvn (installed from apt when
# missing), go >= 1.24 (not installed here: Debian's golang is too old for nats-server 2.15).
set -euo pipefail

# ---- pinned versions ---------------------------------------------------------------------------
# Debian 12's nats-server is 2.9.10; the JetStream features the event bus uses from nats.js 3.x
# (`filter_subjects` on one consumer, consumer/stream `metadata`) need a 2.10+ server, so a newer
# one is built from the Go module proxy into the cache; test/helpers/nats.ts uses that one and
# refuses a server older than 2.10. The apt package is still installed for ad-hoc use.
NATS_SERVER_VERSION="v2.15.2"
KAFKA_VERSION="3.9.2"               # newest 3.9.x on Maven Central; kafkajs 2.2.4 is the client
KAFKA_SCALA="2.13"
SLF4J_VERSION="1.7.36"              # Kafka 3.9 logs through slf4j 1.7; reload4j is its tarball backend
MAVEN_DEPENDENCY_PLUGIN="3.8.1"
APT_PACKAGES=(nats-server redis-server mosquitto)

CACHE="${OFEVENTS_CACHE:-$HOME/.cache/ofevents}"
BIN="$CACHE/bin"

# ---- output and timing -------------------------------------------------------------------------
SCRIPT_START=$(date +%s%N)
SUMMARY=()
CURRENT_STEP=""

log() { printf '[test-setup] %s\n' "$*"; }
die() {
  printf '[test-setup] ERROR: %s\n' "$*" >&2
  exit 1
}
elapsed_since() { # start_ns -> "1.2s"
  local ns=$(($(date +%s%N) - $1))
  printf '%d.%ds' $((ns / 1000000000)) $((ns % 1000000000 / 100000000))
}
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -n "$CURRENT_STEP" ]; then
    printf '[test-setup] FAILED in step "%s" (exit %d); see the output above.\n' "$CURRENT_STEP" "$rc" >&2
  fi
}
trap on_exit EXIT

# run_step NAME FUNCTION: runs FUNCTION, which prints what it did and sets STEP_RESULT to a short
# word ("installed", "cached", ...); records the duration for the summary.
run_step() {
  local name=$1 fn=$2 t0
  CURRENT_STEP=$name
  STEP_RESULT=""
  t0=$(date +%s%N)
  log "== $name"
  "$fn"
  SUMMARY+=("$(printf '%-14s %-34s %s' "$name" "$STEP_RESULT" "$(elapsed_since "$t0")")")
  CURRENT_STEP=""
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() { # only runs `apt-get update` when something is missing
  local missing=() p
  for p in "$@"; do apt_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq || die "apt-get update failed"
  # Debian images here ship policy-rc.d 101, so the services are not auto-started; the tests
  # launch their own instances on free ports either way.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || die "apt-get install ${missing[*]} failed"
}

# ---- prerequisites: java, mvn, go --------------------------------------------------------------
step_prereqs() {
  local need=()
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
  local jv
  jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ "${jv%%.*}" -ge 17 ] 2>/dev/null || die "Java >= 17 needed for Kafka, found '${jv:-none}'"
  command -v go >/dev/null 2>&1 || die "go not found on PATH; Go >= 1.24 is needed to build nats-server $NATS_SERVER_VERSION"
  log "java $jv, $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'), $(go version | cut -d' ' -f3)"
  STEP_RESULT="ok"
}

# ---- Debian packages: redis-server, mosquitto, nats-server 2.9 (ad hoc only) ------------------
step_apt() {
  local before=0 p
  for p in "${APT_PACKAGES[@]}"; do apt_installed "$p" || before=$((before + 1)); done
  apt_install "${APT_PACKAGES[@]}"
  for p in redis-server mosquitto; do
    command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || die "$p not found after apt install"
  done
  log "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), mosquitto $(dpkg-query -W -f='${Version}' mosquitto), nats-server (apt) $(dpkg-query -W -f='${Version}' nats-server)"
  if [ "$before" -eq 0 ]; then STEP_RESULT="cached"; else STEP_RESULT="installed $before package(s)"; fi
}

# ---- Go builds (nats-server; later daprd, etcd, kube-apiserver) --------------------------------
export GOTOOLCHAIN=local # fail fast instead of downloading another toolchain
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOFLAGS="-modcacherw" # lets `rm -rf $CACHE` work
export CGO_ENABLED=0

# go_install_tool NAME VERSION MODULE_PATH: builds MODULE_PATH@VERSION into $CACHE/NAME-VERSION/NAME
# (skipped when `NAME --version` already names VERSION) and links $BIN/NAME to it.
go_install_tool() {
  local name=$1 version=$2 module=$3
  local dir="$CACHE/$name-$version"
  if [ -x "$dir/$name" ] && "$dir/$name" --version 2>&1 | grep -qF "$version"; then
    STEP_RESULT="cached"
  else
    local tmp="$dir.tmp.$$"
    rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
    mkdir -p "$tmp"
    log "go install $module@$version (a few minutes on 2 cores when cold)"
    if ! GOBIN="$tmp" go install -trimpath -ldflags '-s -w' "$module@$version" >"$tmp/go-install.log" 2>&1; then
      local out
      out=$(tail -30 "$tmp/go-install.log")
      rm -rf "$tmp"
      die "go install $module@$version failed:"$'\n'"$out"
    fi
    rm -f "$tmp/go-install.log"
    [ -x "$tmp/$name" ] || die "go install produced no $name binary in $tmp"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    STEP_RESULT="built"
  fi
  mkdir -p "$BIN"
  ln -sfn "$dir/$name" "$BIN/$name"
  log "$BIN/$name -> $("$dir/$name" --version 2>&1 | head -1)"
}

step_nats() { go_install_tool nats-server "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2; }

# ---- Apache Kafka (KRaft, combined broker+controller) from Maven Central -----------------------
# kafka_2.13 holds kafka.Kafka and kafka.tools.StorageTool and depends (runtime scope) on
# kafka-server, -metadata, -raft, -storage, -group-coordinator, ... Its pom has no logging backend,
# so slf4j-reload4j is added (without it the broker runs silently under SLF4J's NOP logger).
write_kafka_pom() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/test-setup.sh; only used to fetch the Kafka broker's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ofevents.test</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$KAFKA_SCALA</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

step_kafka() {
  local dir="$CACHE/kafka-$KAFKA_VERSION"
  local jar="kafka_$KAFKA_SCALA-$KAFKA_VERSION.jar"
  if [ -f "$dir/libs/.complete" ] && [ -f "$dir/libs/$jar" ]; then
    STEP_RESULT="cached"
  else
    mkdir -p "$dir"
    write_kafka_pom "$dir/pom.xml"
    local tmp="$dir/libs.tmp.$$"
    rm -rf "$dir"/libs.tmp.* # leftovers of an interrupted or failed run
    log "mvn dependency:copy-dependencies kafka_$KAFKA_SCALA:$KAFKA_VERSION -> $dir/libs"
    mvn -B -Dstyle.color=never -f "$dir/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
      "org.apache.maven.plugins:maven-dependency-plugin:$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$dir/mvn.log" 2>&1 ||
      die "Maven could not fetch the Kafka $KAFKA_VERSION jars:$(printf '\n'; grep -E 'ERROR|BUILD' "$dir/mvn.log" | head -30)"
    [ -f "$tmp/$jar" ] || die "$jar missing from $tmp after mvn"
    # The broker's entry points must load from these jars alone.
    # (kafka.Kafka without arguments prints its usage and exits 1.)
    local out
    out=$(java -cp "$tmp/*" kafka.Kafka 2>&1 || true)
    grep -q 'USAGE: java \[options\] kafka.Kafka server.properties' <<<"$out" ||
      die "kafka.Kafka does not load from $tmp: $(tail -3 <<<"$out")"
    out=$(java -cp "$tmp/*" -Dlog4j.configuration=file:/dev/null kafka.tools.StorageTool random-uuid 2>&1 || true)
    grep -Eq '^[A-Za-z0-9_-]{22}$' <<<"$out" || die "kafka.tools.StorageTool does not run from $tmp: $(tail -3 <<<"$out")"
    touch "$tmp/.complete"
    rm -rf "$dir/libs"
    mv "$tmp" "$dir/libs"
    STEP_RESULT="downloaded"
  fi
  ln -sfn "$dir" "$CACHE/kafka"
  log "$CACHE/kafka -> kafka-$KAFKA_VERSION ($(find "$dir/libs" -name '*.jar' | wc -l) jars, $(du -sh "$dir/libs" | cut -f1))"
}

# ---- later: daprd, etcd, kube-apiserver --------------------------------------------------------
# Add one step_<tool> function each, built the same way as nats-server (go_install_tool, or a
# wrapper module in $CACHE/build-<tool> when the module has `replace` directives), pinned above,
# and call it from main below. See shared/research/test-infra.md §2 for etcd and kube-apiserver.
#   step_daprd()          { ...; }
#   step_etcd()           { ...; }
#   step_kube_apiserver() { ...; }

# ---- main --------------------------------------------------------------------------------------
main() {
  log "cache: $CACHE"
  mkdir -p "$CACHE" "$BIN"
  run_step prereqs step_prereqs
  run_step apt step_apt
  run_step nats-server step_nats
  run_step kafka step_kafka
  log "== summary"
  local line
  for line in "${SUMMARY[@]}"; do log "  $line"; done
  log "  total          $(elapsed_since "$SCRIPT_START")"
}

main "$@"
