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
#   $CACHE/keda-<ver>/            the KEDA operator (pruned build) and its CRDs (crds/*.yaml)
#   $CACHE/otelcol-<ver>/         an OpenTelemetry Collector built by the pinned collector builder
#   $CACHE/otelcol-builder-<ver>/ that builder (`go install`)
#   $CACHE/argo-events-<ver>/     Argo Events' eventsource and sensor (pruned build), for bench P1
# (rabbitmq-server comes from apt, like redis-server and mosquitto: nothing of it is cached.)
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
APT_PACKAGES=(nats-server redis-server mosquitto openssl chromium)

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
  SUMMARY+=("$(printf '%-23s %-34s %s' "$name" "$STEP_RESULT" "$(elapsed_since "$t0")")")
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
  if [ -z "${APT_UPDATED:-}" ]; then # once per run, however many steps install packages
    as_root apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
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
  command -v chromium >/dev/null 2>&1 || die "chromium not found after apt install (the live page's browser tests need it)"
  log "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), mosquitto $(dpkg-query -W -f='${Version}' mosquitto), nats-server (apt) $(dpkg-query -W -f='${Version}' nats-server), chromium $(dpkg-query -W -f='${Version}' chromium)"
  if [ "$before" -eq 0 ]; then STEP_RESULT="cached"; else STEP_RESULT="installed $before package(s)"; fi
}

# ---- RabbitMQ: Debian's rabbitmq-server (the amqp source's tests) --------------------------------
# test/helpers/rabbitmq.ts launches /usr/lib/rabbitmq/bin/rabbitmq-server itself (own node name,
# ports, epmd and temp dirs), so the package's own service must not start: a policy-rc.d that
# answers 101 ("action forbidden") is in place during the install, and removed after if we wrote it.
step_rabbitmq() {
  if apt_installed rabbitmq-server && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v epmd >/dev/null 2>&1; then
    log "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
    STEP_RESULT="cached"
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d wrote=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by scripts/test-setup.sh during the rabbitmq-server install\nexit 101\n' |
      as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    wrote=1
  fi
  # apt_install exits the script on failure; the trap then leaves a policy-rc.d we wrote in place
  # (it only stops package scripts from starting services).
  apt_install rabbitmq-server
  if [ -n "$wrote" ]; then as_root rm -f "$policy"; fi
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || die "/usr/lib/rabbitmq/bin/rabbitmq-server not found after apt install"
  command -v epmd >/dev/null 2>&1 || die "epmd not found after installing rabbitmq-server"
  log "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
  STEP_RESULT="installed"
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

# ---- daprd (Dapr sidecar, for the Dapr EventBus driver's tests) --------------------------------
# Used by test/helpers/daprd.ts. Order: $DAPR_BIN if set, else a daprd on PATH (neither is
# version-checked beyond logging `daprd --version`), else a pruned build from the Go module proxy,
# cached in $CACHE/daprd-<ver>/daprd. $BIN/daprd links to whichever is used.
#
# Why not `go install github.com/dapr/dapr/cmd/daprd@<ver>`: dapr's go.mod has `replace`
# directives, which `go install pkg@version` refuses. Instead the module is downloaded
# (`go mod download`), copied to a writable dir and built there as the main module, so its own
# go.mod (replaces) and complete go.sum apply: no `go mod tidy`, no go.mod edits, no sumdb lookups
# beyond the dapr module itself. The default -mod=readonly suffices (no GOFLAGS=-mod=mod, GONOSUMDB
# or GOTOOLCHAIN download needed with the local Go >= 1.26.5).
#
# Version: v1.18.3 (newest) does not build from this proxy: its dependency
# github.com/dapr/durabletask-go v0.12.4 answers 403 "This module version is not available"
# (so do v0.12.0, v0.12.2, v0.12.3). v1.18.2 resolves completely. It needs Go >= 1.26.5.
#
# Pruning: cmd/daprd/components/*.go holds one file per component, each just an init() that
# registers it (e.g. pubsub_kafka.go: RegisterComponent(kafka.NewKafka, "kafka")), gated by
# `//go:build allcomponents || stablecomponents`, except pubsub_jetstream.go (and ~80 others),
# which are `allcomponents` only; zz_notag.go (`!allcomponents && !stablecomponents`) panics at
# init. So the build uses -tags allcomponents and deletes every registration file except
# DAPR_KEEP_COMPONENTS from the copy (never from the module cache), which leaves 206 module zips
# to download and compile instead of an estimated ~600. The runtime core (HTTP/gRPC APIs,
# resiliency, and actor/workflow code that stays idle without placement/scheduler) is unchanged.
# Kept:
#   pubsub_jetstream, pubsub_kafka, pubsub_redis   the brokers the Dapr driver is tested against
#   pubsub_in-memory                               broker-less pub/sub for quick tests
#   state_redis                                    a state store if a test needs one; adds
#                                                  little (same go-redis code as pubsub_redis)
#   secretstores_local_env, secretstores_local_file  secretKeyRef in component metadata
#   nameresolution_mdns                            the standalone default (without it daprd logs
#                                                  an init error, runtime.go initNameResolution);
#                                                  only service invocation uses it
#   zz_notag                                       not compiled with -tags allcomponents
# Measured on 2 cores shared with other test runs (load ~9): cold 13 min wall (7.5 min CPU),
# 294 MB of module zips, 1.5 GB GOMODCACHE + 1.4 GB GOCACHE, binary 78 MiB; a rebuild with warm
# Go caches 11 s; a cached run 0.1 s.
DAPR_VERSION="v1.18.2"
DAPR_MODULE="github.com/dapr/dapr"
DAPR_GO_MIN="1.26.5" # the go directive of dapr v1.18.2's go.mod
DAPR_KEEP_COMPONENTS=(
  pubsub_jetstream pubsub_kafka pubsub_redis pubsub_in-memory
  state_redis
  secretstores_local_env secretstores_local_file
  nameresolution_mdns
  zz_notag
)

version_ge() { # version_ge A B: A >= B (dotted numbers)
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]
}

# build_daprd DIR: the pruned build described above, into DIR/daprd (via DIR.tmp.<pid>).
build_daprd() {
  local dir=$1
  local tmp="$dir.tmp.$$"
  local gov
  gov=$(go env GOVERSION)
  gov=${gov#go}
  version_ge "$gov" "$DAPR_GO_MIN" || die "daprd $DAPR_VERSION needs Go >= $DAPR_GO_MIN, found $gov"
  rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
  mkdir -p "$tmp"
  log "go mod download $DAPR_MODULE@$DAPR_VERSION"
  go mod download -json "$DAPR_MODULE@$DAPR_VERSION" >"$tmp/download.json" 2>&1 ||
    die "go mod download $DAPR_MODULE@$DAPR_VERSION failed: $(cat "$tmp/download.json")"
  local src
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/download.json")
  [ -f "$src/go.mod" ] || die "no module dir in the output of go mod download: $(cat "$tmp/download.json")"
  cp -r "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"

  local comp="$tmp/src/cmd/daprd/components" keep f
  for keep in "${DAPR_KEEP_COMPONENTS[@]}"; do
    [ -f "$comp/$keep.go" ] || die "$comp/$keep.go missing: the component files changed in $DAPR_VERSION"
  done
  for f in "$comp"/*; do
    case " ${DAPR_KEEP_COMPONENTS[*]} " in
      *" $(basename "$f" .go) "*) ;;
      *) rm -f "$f" ;;
    esac
  done
  printf '%s\n' "${DAPR_KEEP_COMPONENTS[@]}" >"$tmp/components.txt"

  log "go build ./cmd/daprd (pruned: $(ls "$comp" | wc -l) component files; 10-15 min on 2 cores when cold)"
  if ! (cd "$tmp/src" && nice -n 10 go build -trimpath -tags allcomponents \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v}" \
    -o "$tmp/daprd" ./cmd/daprd) >"$tmp/build.log" 2>&1; then
    local out
    out=$(grep -v '^go: downloading' "$tmp/build.log" | tail -30)
    rm -rf "$tmp"
    die "go build ./cmd/daprd ($DAPR_VERSION) failed:"$'\n'"$out"
  fi
  [ "$("$tmp/daprd" --version 2>&1)" = "${DAPR_VERSION#v}" ] ||
    die "$tmp/daprd --version says '$("$tmp/daprd" --version 2>&1)', expected ${DAPR_VERSION#v}"
  rm -rf "$tmp/src" "$tmp/download.json"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

step_daprd() {
  local dir="$CACHE/daprd-$DAPR_VERSION" found="" p
  if [ -n "${DAPR_BIN:-}" ]; then
    [ -x "$DAPR_BIN" ] && [ -f "$DAPR_BIN" ] || die "DAPR_BIN=$DAPR_BIN is not an executable file"
    found=$DAPR_BIN
    STEP_RESULT="\$DAPR_BIN"
  else
    # A daprd on PATH, unless it is $BIN/daprd (our own link) or a build in this cache.
    while IFS= read -r p; do
      [ "$(readlink -f "$(dirname "$p")")" = "$(readlink -f "$BIN")" ] && continue
      case "$(readlink -f "$p")" in "$(readlink -f "$CACHE")"/*) continue ;; esac
      found=$p
      STEP_RESULT="from PATH"
      break
    done < <(type -ap daprd)
  fi
  if [ -z "$found" ]; then
    if [ -x "$dir/daprd" ] && [ "$("$dir/daprd" --version 2>&1)" = "${DAPR_VERSION#v}" ]; then
      STEP_RESULT="cached"
    else
      build_daprd "$dir"
      STEP_RESULT="built"
    fi
    found="$dir/daprd"
  fi
  mkdir -p "$BIN"
  ln -sfn "$found" "$BIN/daprd"
  log "$BIN/daprd -> $found (version $("$found" --version 2>&1 | head -1), $(du -h "$(readlink -f "$found")" | cut -f1))"
}

# ---- etcd + kube-apiserver (a real control plane for the controller tests) --------------------
# Used by test/helpers/kube.ts (ControlPlane), which starts them the way controller-runtime's
# envtest does. Order, for each binary: $KUBEBUILDER_ASSETS/<name> (setup-envtest's layout), else
# one on PATH (not $BIN's own link or a build in this cache), else a build from the Go module proxy
# cached in $CACHE/<name>-<ver>/<name>; a found binary older than ETCD_MIN / KUBE_MIN is logged and
# passed over. $BIN/<name> links to whichever is used.
#
# Neither builds with `go install pkg@version`: both go.mod files have `replace` directives
# (etcd's server/v3: `go.etcd.io/etcd/api/v3 => ../api`, ...; k8s.io/kubernetes: every k8s.io/*
# staging module => ./staging/src/k8s.io/<name>, and the module zip from the proxy has no
# staging/src: each staging dir has its own go.mod, so it is cut out of the zip). So each is built
# as a dependency of a wrapper module written into $CACHE/<name>-<ver>/wrapper (kept there for
# inspection): a dependency's replaces are ignored, and
#   - etcd: server/v3 requires its published siblings (api/v3, client/v3, pkg/v3, ...) at the same
#     tag, so `go get go.etcd.io/etcd/server/v3@ver` resolves as is (main.go is at the module root);
#   - kube-apiserver: the wrapper pins each staging module to its published v0.<minor>.<patch>
#     with one `replace` line each, the list read from k8s.io/kubernetes' own go.mod (it changes
#     between minors), and copies its `godebug` lines.
# The version k8s reports comes from -X ldflags (without them `--version` and /version say
# v0.0.0-master, and the compatibility/emulation-version logic misreads the binary's version).
#
# Versions: k8s v1.36.4 is the newest 1.36 patch this proxy serves with a checksum (v1.36.5: sumdb
# 404; v1.36.6: 403). 1.36 is built and tested against etcd 3.6 (its go.mod has client v3.6.8;
# 1.37 moved to 3.7), so etcd is the newest 3.6.x. Both need Go >= 1.26.0.
# Measured on 2 cores shared with other test runs (load 2-5), in this script's order (so the Go
# caches already held daprd's build, which shares grpc, protobuf, otel, ...): etcd cold 62 s
# (binary 26 MiB), kube-apiserver cold 7 min 46 s (101 MiB, 33 staging modules pinned); together
# +0.5 GB GOMODCACHE and +2.2 GB GOCACHE. With warm Go caches a rebuild takes 10 s + 19 s and
# gives byte-identical binaries; a cached run 0.1 s.
ETCD_VERSION="v3.6.16"
ETCD_MODULE="go.etcd.io/etcd/server/v3"
ETCD_MIN="3.5.11" # what k8s >= 1.31 assumes (health endpoints); Debian 12's etcd-server is 3.4.23
KUBE_VERSION="v1.36.4"
KUBE_MODULE="k8s.io/kubernetes"
KUBE_MIN="1.31.0"
# Cold build time of each, for the log line (measured as described above and below).
declare -A K8S_COLD_BUILD=([etcd]="about 1 min" [kube-apiserver]="10-20 min" [kube-controller-manager]="3-6 min" [keda]="5-10 min" [otelcol]="2-3 min")

# external_k8s_binary NAME MIN VERSION_FN: prints the path of a usable NAME from $KUBEBUILDER_ASSETS
# or PATH (nothing if none); VERSION_FN PATH prints its bare version ("3.6.16", "1.36.4").
external_k8s_binary() {
  local name=$1 min=$2 version_fn=$3 p v candidates=()
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$name" ]; then
    candidates+=("$KUBEBUILDER_ASSETS/$name")
  fi
  while IFS= read -r p; do
    [ "$(readlink -f "$(dirname "$p")")" = "$(readlink -f "$BIN")" ] && continue
    case "$(readlink -f "$p")" in "$(readlink -f "$CACHE")"/*) continue ;; esac
    candidates+=("$p")
  done < <(type -ap "$name")
  for p in ${candidates[@]+"${candidates[@]}"}; do
    v=$("$version_fn" "$p")
    if [ -n "$v" ] && version_ge "$v" "$min"; then
      printf '%s\n' "$p"
      return 0
    fi
    log "ignoring $p (version '${v:-?}' < $min)" >&2
  done
}

etcd_version() { "$1" --version 2>/dev/null | sed -n 's/^etcd Version: *//p' | head -1; }
kube_apiserver_version() { "$1" --version 2>/dev/null | sed -n 's/^Kubernetes v\([0-9][0-9.]*\).*/\1/p' | head -1; }

# wrapper_build NAME DIR VERSION_FN WANT: runs the function wrapper_setup_<NAME> in a fresh wrapper
# module dir (it writes go.mod/go.sum, and build.env with WRAPPER_PKG and WRAPPER_LDFLAGS; it runs
# where `set -e` does not apply, so it returns 1 on each failure itself), builds WRAPPER_PKG
# into DIR/NAME via DIR.tmp.<pid>, and checks that VERSION_FN reports WANT.
wrapper_build() {
  local name=$1 dir=$2 version_fn=$3 want=$4
  local tmp="$dir.tmp.$$" out gov
  gov=$(go env GOVERSION)
  gov=${gov#go}
  version_ge "$gov" "1.26.0" || die "$name needs Go >= 1.26.0, found $gov"
  rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
  mkdir -p "$tmp/wrapper"
  WRAPPER_PKG=""
  WRAPPER_LDFLAGS=""
  if ! (cd "$tmp/wrapper" && "wrapper_setup_$name") >"$tmp/setup.log" 2>&1; then
    out=$(grep -v '^go: downloading' "$tmp/setup.log" | tail -30)
    rm -rf "$tmp"
    die "setting up the wrapper module for $name failed:"$'\n'"$out"
  fi
  # shellcheck disable=SC1091 # written by wrapper_setup_<name>
  . "$tmp/wrapper/build.env"
  log "go build $WRAPPER_PKG (wrapper module $dir/wrapper)"
  if ! (cd "$tmp/wrapper" && nice -n 10 go build -trimpath -ldflags "-s -w $WRAPPER_LDFLAGS" \
    -o "$tmp/$name" "$WRAPPER_PKG") >"$tmp/build.log" 2>&1; then
    out=$(grep -v '^go: downloading' "$tmp/build.log" | tail -30)
    rm -rf "$tmp"
    die "go build $WRAPPER_PKG failed:"$'\n'"$out"
  fi
  local got
  got=$("$version_fn" "$tmp/$name")
  [ "$got" = "$want" ] || die "$tmp/$name reports version '$got', expected $want"
  rm -f "$tmp/build.log" "$tmp/setup.log"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

wrapper_setup_etcd() {
  go mod init local.ofevents/build-etcd || return 1
  go get "$ETCD_MODULE@$ETCD_VERSION" || return 1
  printf 'WRAPPER_PKG=%q\nWRAPPER_LDFLAGS=%q\n' "$ETCD_MODULE" "" >build.env
}

# wrapper_setup_kube CMD: a wrapper module for k8s.io/kubernetes/cmd/CMD (kube-apiserver,
# kube-controller-manager: the same pins, so the second build reuses most of the first one's cache).
wrapper_setup_kube() {
  local cmd=$1 v=${KUBE_VERSION#v} gomod m kv staging
  local minor
  minor=$(cut -d. -f2 <<<"$v")
  staging="v0.${v#*.}" # v1.36.4 -> v0.36.4
  go mod init "local.ofevents/build-$cmd" || return 1
  gomod=$(go mod download -json "$KUBE_MODULE@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { echo "go mod download $KUBE_MODULE@$KUBE_VERSION gave no go.mod"; return 1; }
  local n=0
  for m in $(awk '/=> \.\/staging\/src\//{print ($1=="replace")?$2:$1}' "$gomod"); do
    go mod edit -replace="$m=$m@$staging" || return 1
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "no staging replaces found in $gomod"; return 1; }
  if awk '/=>/ && !/=> \.\/staging\/src\//' "$gomod" | grep -q .; then
    echo "$KUBE_MODULE $KUBE_VERSION has replaces other than staging ones:"
    awk '/=>/ && !/=> \.\/staging\/src\//' "$gomod"
    return 1
  fi
  while read -r _ kv; do go mod edit -godebug="$kv" || return 1; done < <(grep -E '^godebug [a-z]' "$gomod")
  echo "$n staging modules pinned to $staging"
  go get "$KUBE_MODULE/cmd/$cmd@$KUBE_VERSION" || return 1
  local cv=k8s.io/component-base/version
  printf 'WRAPPER_PKG=%q\nWRAPPER_LDFLAGS=%q\n' "$KUBE_MODULE/cmd/$cmd" \
    "-X $cv.gitVersion=$KUBE_VERSION -X $cv.gitMajor=1 -X $cv.gitMinor=$minor -X $cv.gitTreeState=clean" >build.env
}

wrapper_setup_kube-apiserver() { wrapper_setup_kube kube-apiserver; }
wrapper_setup_kube-controller-manager() { wrapper_setup_kube kube-controller-manager; }

# k8s_binary_step NAME VERSION MIN VERSION_FN
k8s_binary_step() {
  local name=$1 version=$2 min=$3 version_fn=$4
  local dir="$CACHE/$name-$version" found
  found=$(external_k8s_binary "$name" "$min" "$version_fn")
  if [ -n "$found" ]; then
    case "$found" in "${KUBEBUILDER_ASSETS:-/nonexistent}"/*) STEP_RESULT="\$KUBEBUILDER_ASSETS" ;; *) STEP_RESULT="from PATH" ;; esac
  else
    if [ -x "$dir/$name" ] && [ "$("$version_fn" "$dir/$name")" = "${version#v}" ]; then
      STEP_RESULT="cached"
    else
      log "building $name $version from the Go module proxy (${K8S_COLD_BUILD[$name]:-a few minutes} on 2 cores when cold)"
      wrapper_build "$name" "$dir" "$version_fn" "${version#v}"
      STEP_RESULT="built"
    fi
    found="$dir/$name"
  fi
  mkdir -p "$BIN"
  ln -sfn "$found" "$BIN/$name"
  log "$BIN/$name -> $found (version $("$version_fn" "$found"), $(du -h "$(readlink -f "$found")" | cut -f1))"
}

step_etcd() { k8s_binary_step etcd "$ETCD_VERSION" "$ETCD_MIN" etcd_version; }
step_kube_apiserver() { k8s_binary_step kube-apiserver "$KUBE_VERSION" "$KUBE_MIN" kube_apiserver_version; }

# ---- kube-controller-manager (Deployments, ReplicaSets, garbage collection for the platform tests)
# Used by test/helpers/kube-controller-manager.ts (KubeControllerManager). Found and built exactly as
# kube-apiserver above: same KUBE_VERSION, same wrapper module recipe (wrapper_setup_kube), so the
# k8s.io staging modules are pinned alike and most packages come from kube-apiserver's build cache.
# Measured on 2 cores shared with other test runs (load 10-13), right after kube-apiserver: cold
# 4 min 22 s (binary 92 MiB); a cached run 0.2 s.
kube_controller_manager_version() { kube_apiserver_version "$1"; }
step_kube_controller_manager() {
  k8s_binary_step kube-controller-manager "$KUBE_VERSION" "$KUBE_MIN" kube_controller_manager_version
}

# ---- KEDA operator (ScaledObjects: HPA creation, scaling to and from zero) ----------------------
# Used by test/helpers/keda.ts (KedaOperator). Built from the Go module proxy into
# $CACHE/keda-<ver>/keda-operator, with the module's CRDs (config/crd/bases/*.yaml: ScaledObject,
# ScaledJob, TriggerAuthentication, ClusterTriggerAuthentication, CloudEventSource,
# ClusterCloudEventSource) copied beside it into $CACHE/keda-<ver>/crds/ (the kustomize patches in
# config/crd/patches only add schema bounds and are not applied). $BIN/keda-operator and
# $CACHE/keda link to them.
#
# Like daprd, not `go install`: KEDA's go.mod has a `replace` (github.com/nexus-rpc/
# nexus-proto-annotations, for the temporal scaler), so the module is downloaded, copied to a
# writable dir and built there as the main module with its own go.mod and go.sum.
#
# Version: v2.21.0 is built with k8s.io/* v0.36.4 (the same as KUBE_VERSION: shared build cache)
# and controller-runtime v0.24.1, and needs Go >= 1.26.0. v2.21.1 needs Go >= 1.27.4; v2.22.0
# answers 403 on this proxy.
#
# Pruning: every scaler is a file in the one package pkg/scalers, and
# pkg/scaling/scalers_builder.go names them all in one switch between `// TRIGGERS-START` and
# `// TRIGGERS-END`, so every scaler's client library (cloud SDKs, databases, brokers) is compiled
# in. In the copy (never in the module cache) the switch keeps only the cases in KEDA_KEEP_SCALERS
# and pkg/scalers keeps only KEDA_KEEP_FILES (the kept scalers, redis_scaler.go for the Redis client
# the streams scaler shares, scaler.go with the interfaces); zz_pruned.go declares the one constant
# the kept files used from a removed one (externalMetricType, from azure_queue_scaler.go). That
# halves the packages to compile (3336 -> 1613 with the standard library). The operator's secret
# resolvers (AWS, Azure, GCP, Vault) and event emitters stay as they are.
#   cpu, memory          the cpu trigger the controller renders for a workload without a backlog
#                        trigger (packages/controller/src/scaling.ts); memory shares its file
#   kafka                Kafka bus and source backlogs (IBM sarama client)
#   nats-jetstream       JetStream bus and NATS source backlogs (HTTP to the monitoring port)
#   redis-streams        Dapr pubsub.redis backlogs
# Measured on 2 cores shared with other test runs (load 11-13, the build at nice 10), right after
# kube-apiserver and kube-controller-manager (same k8s.io client libraries in the Go caches): cold
# 12 min 26 s wall, module downloads included (binary 79 MiB); with an empty GOCACHE (nothing
# shared) and the modules already downloaded, 5 min 51 s CPU (8 min wall at load 3-8, nice 19); a
# rebuild with warm Go caches 15 s; a cached run 0.1 s.
KEDA_VERSION="v2.21.0"
KEDA_MODULE="github.com/kedacore/keda/v2"
KEDA_GO_MIN="1.26.0" # the go directive of KEDA v2.21.0's go.mod
KEDA_KEEP_SCALERS=(cpu memory kafka nats-jetstream redis-streams)
KEDA_KEEP_FILES=(scaler cpu_memory_scaler kafka_scaler nats_jetstream_scaler redis_scaler redis_streams_scaler)

# keda_version DIR: the version of DIR/keda-operator, from DIR/version.txt, which build_keda writes
# after the build (the operator has no --version flag, it logs "KEDA Version: <ver>" only once
# connected to a cluster, and -trimpath leaves the -X ldflags out of the binary's build info).
keda_version() { [ -x "$1/keda-operator" ] && cat "$1/version.txt" 2>/dev/null; }

# keda_prune_builder FILE: keeps only the KEDA_KEEP_SCALERS cases of buildScaler's switch.
keda_prune_builder() {
  local file=$1 kept
  awk -v keep=" ${KEDA_KEEP_SCALERS[*]} " '
    /TRIGGERS-START/ { inside = 1; print; next }
    /TRIGGERS-END/ { inside = 0; print; next }
    inside && /^[ \t]*case "/ {
      line = $0; sub(/^[ \t]*case /, "", line); sub(/:[ \t]*$/, "", line)
      n = split(line, names, /, */); state = "drop"
      for (i = 1; i <= n; i++) { name = names[i]; gsub(/"/, "", name); if (index(keep, " " name " ")) state = "keep" }
      if (state == "keep") print
      next
    }
    inside && /^[ \t]*default:/ { state = "keep"; print; next }
    inside && /^[ \t]*\/\// { next }
    inside && /^[ \t]*(switch |}$)/ { print; next }
    inside { if (state == "keep") print; next }
    { print }
  ' "$file" >"$file.pruned" || die "pruning $file failed"
  mv "$file.pruned" "$file"
  kept=$(sed -n '/TRIGGERS-START/,/TRIGGERS-END/p' "$file" | grep -c '^[[:space:]]*case "')
  [ "$kept" -eq "${#KEDA_KEEP_SCALERS[@]}" ] ||
    die "$file: $kept trigger cases left after pruning, expected ${#KEDA_KEEP_SCALERS[@]} (${KEDA_KEEP_SCALERS[*]}): buildScaler changed in $KEDA_VERSION"
}

# build_keda DIR: the pruned build described above, into DIR/keda-operator and DIR/crds (via
# DIR.tmp.<pid>).
build_keda() {
  local dir=$1
  local tmp="$dir.tmp.$$"
  local gov
  gov=$(go env GOVERSION)
  gov=${gov#go}
  version_ge "$gov" "$KEDA_GO_MIN" || die "KEDA $KEDA_VERSION needs Go >= $KEDA_GO_MIN, found $gov"
  rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
  mkdir -p "$tmp"
  log "go mod download $KEDA_MODULE@$KEDA_VERSION"
  go mod download -json "$KEDA_MODULE@$KEDA_VERSION" >"$tmp/download.json" 2>&1 ||
    die "go mod download $KEDA_MODULE@$KEDA_VERSION failed: $(cat "$tmp/download.json")"
  local src
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/download.json")
  [ -f "$src/go.mod" ] || die "no module dir in the output of go mod download: $(cat "$tmp/download.json")"
  cp -r "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"

  keda_prune_builder "$tmp/src/pkg/scaling/scalers_builder.go"
  local scalers="$tmp/src/pkg/scalers" keep f base
  for keep in "${KEDA_KEEP_FILES[@]}"; do
    [ -f "$scalers/$keep.go" ] || die "$scalers/$keep.go missing: the scaler files changed in $KEDA_VERSION"
  done
  for f in "$scalers"/*.go; do
    base=$(basename "$f" .go)
    case " ${KEDA_KEEP_FILES[*]} " in
      *" ${base%_test} "*) ;;
      *) rm -f "$f" ;;
    esac
  done
  printf '%s\n' "// Written by scripts/test-setup.sh: declared in a scaler file the pruned build removes." \
    "package scalers" "" 'const externalMetricType = "External"' >"$scalers/zz_pruned.go"
  printf '%s\n' "${KEDA_KEEP_SCALERS[@]}" >"$tmp/scalers.txt"

  log "go build ./cmd/operator (pruned: scalers ${KEDA_KEEP_SCALERS[*]}; ${K8S_COLD_BUILD[keda]} on 2 cores when cold)"
  if ! (cd "$tmp/src" && nice -n 10 go build -trimpath \
    -ldflags "-s -w -X $KEDA_MODULE/version.Version=${KEDA_VERSION#v}" \
    -o "$tmp/keda-operator" ./cmd/operator) >"$tmp/build.log" 2>&1; then
    local out
    out=$(grep -v '^go: downloading' "$tmp/build.log" | tail -30)
    rm -rf "$tmp"
    die "go build ./cmd/operator ($KEDA_VERSION) failed:"$'\n'"$out"
  fi
  "$tmp/keda-operator" --help 2>&1 | grep -q -- '--health-probe-bind-address' ||
    die "$tmp/keda-operator --help does not list --health-probe-bind-address"
  printf '%s\n' "${KEDA_VERSION#v}" >"$tmp/version.txt"
  mkdir -p "$tmp/crds"
  cp "$tmp/src"/config/crd/bases/*.yaml "$tmp/crds/"
  grep -lq '^  name: scaledobjects.keda.sh$' "$tmp/crds"/*.yaml || die "no ScaledObject CRD in $KEDA_MODULE/config/crd/bases"
  rm -rf "$tmp/src" "$tmp/download.json" "$tmp/build.log"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

step_keda() {
  local dir="$CACHE/keda-$KEDA_VERSION"
  if [ "$(keda_version "$dir")" = "${KEDA_VERSION#v}" ] &&
    [ "$(cat "$dir/scalers.txt" 2>/dev/null)" = "$(printf '%s\n' "${KEDA_KEEP_SCALERS[@]}")" ] &&
    compgen -G "$dir/crds/*.yaml" >/dev/null; then
    STEP_RESULT="cached"
  else
    build_keda "$dir"
    STEP_RESULT="built"
  fi
  mkdir -p "$BIN"
  ln -sfn "$dir/keda-operator" "$BIN/keda-operator"
  ln -sfn "$dir" "$CACHE/keda"
  log "$BIN/keda-operator -> $dir/keda-operator (version $(keda_version "$dir"), $(du -h "$dir/keda-operator" | cut -f1)); $CACHE/keda/crds: $(find "$dir/crds" -name '*.yaml' | wc -l) CRDs"
}

# ---- OpenTelemetry Collector (a real OTLP hop for the tracing tests) -----------------------------
# Used by test/helpers/otelcol.ts (OtelCollector): OTLP in over HTTP and gRPC, OTLP/HTTP JSON out to
# a receiver in the test process. Built with the OpenTelemetry Collector Builder from the Go module
# proxy: the builder is `go install`ed into $CACHE/otelcol-builder-<ver>/builder (its go.mod has no
# replaces), then runs on a manifest this script writes (write_otelcol_manifest) with only the
# components the helper configures, so the build compiles neither contrib nor the core
# distribution's extras (zpages, memory limiter, batch processor, nop components):
#   otlpreceiver       OTLP/HTTP and OTLP/gRPC in
#   otlphttpexporter   OTLP/HTTP (encoding: json) to the test's receiver
#   debugexporter      one log line per batch, so a failing test's log tail shows what arrived
#   fileprovider       `--config <file>`
#   envprovider        not used by the helper's config, but the collector resolves `${VAR}` with
#                      the env scheme by default and refuses to start without its provider
#                      ("DefaultScheme not found in providers list"); http, https and yaml are
#                      left out
# No processor: the helper forwards each export as it arrives (a batch processor would only add
# its timeout to every test that waits for a span).
# Output: $CACHE/otelcol-<ver>/otelcol (with the manifest and the generated module in build/, kept
# for inspection, the binary moved out of it); $BIN/otelcol links to it. A cached run only compares
# `otelcol --version` and the manifest.
#
# Versions: one collector release pins all of it. The builder vX.Y.Z generates a go.mod requiring
# go.opentelemetry.io/collector/otelcol at its own version and refuses components whose minor differs
# (its strict versioning check), so builder, otelcol, the components and the telemetry module are
# OTELCOL_VERSION, and the confmap providers, which are stable 1.x modules, the same release's
# OTELCOL_STABLE_VERSION (the pair the builder's own default manifest names). v0.165.0 is the newest
# release on this proxy; it needs Go >= 1.26.0.
# Measured on 2 cores shared with other test runs (load 3-6): with empty Go caches (nothing shared,
# module downloads included) 2 min 36 s wall (1 min 58 s CPU): 240 module zips, 579 MB GOMODCACHE +
# 608 MB GOCACHE; in this script's order, after daprd, etcd, kube-apiserver and KEDA (which share
# grpc, protobuf and otel), 69 s with the builder's own install; binary 37 MiB. A rebuild with warm
# Go caches 2 s; a cached run 0.1 s.
OTELCOL_VERSION="v0.165.0"
OTELCOL_STABLE_VERSION="v1.71.0" # the stable modules of the same release (confmap providers)
OTELCOL_GO_MIN="1.26.0"          # the go directive of the collector modules' go.mod

# write_otelcol_manifest FILE OUTPUT_PATH: the builder's manifest; every module pinned.
write_otelcol_manifest() {
  local v=$OTELCOL_VERSION s=$OTELCOL_STABLE_VERSION c=go.opentelemetry.io/collector
  cat >"$1" <<EOF
# Written by scripts/test-setup.sh; the builder's manifest for the tests' collector.
dist:
  module: local.ofevents/otelcol
  name: otelcol
  description: OpenTelemetry Collector for the ofevents tests
  version: ${v#v}
  output_path: $2
receivers:
  - gomod: $c/receiver/otlpreceiver $v
exporters:
  - gomod: $c/exporter/otlphttpexporter $v
  - gomod: $c/exporter/debugexporter $v
providers:
  - gomod: $c/confmap/provider/fileprovider $s
  - gomod: $c/confmap/provider/envprovider $s
telemetry:
  gomod: $c/service $v
  import: $c/service/telemetry/otelconftelemetry
EOF
}

otelcol_version() { "$1" --version 2>/dev/null | sed -n 's/^otelcol version \([0-9][0-9.]*\)$/\1/p' | head -1; }

# otelcol_builder: prints the path of the pinned builder, installing it first when missing.
otelcol_builder() {
  local dir="$CACHE/otelcol-builder-$OTELCOL_VERSION"
  if [ -x "$dir/builder" ] && "$dir/builder" version 2>&1 | grep -qF "${OTELCOL_VERSION#v}"; then
    printf '%s\n' "$dir/builder"
    return 0
  fi
  local tmp="$dir.tmp.$$"
  rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
  mkdir -p "$tmp"
  log "go install go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION" >&2
  if ! GOBIN="$tmp" go install -trimpath -ldflags '-s -w' \
    "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION" >"$tmp/go-install.log" 2>&1; then
    local out
    out=$(tail -30 "$tmp/go-install.log")
    rm -rf "$tmp"
    die "go install go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION failed:"$'\n'"$out"
  fi
  rm -f "$tmp/go-install.log"
  [ -x "$tmp/builder" ] || die "go install produced no builder binary in $tmp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  printf '%s\n' "$dir/builder"
}

# build_otelcol DIR: the builder run described above, into DIR/otelcol (via DIR.tmp.<pid>).
build_otelcol() {
  local dir=$1
  local tmp="$dir.tmp.$$" gov builder out
  gov=$(go env GOVERSION)
  gov=${gov#go}
  version_ge "$gov" "$OTELCOL_GO_MIN" || die "otelcol $OTELCOL_VERSION needs Go >= $OTELCOL_GO_MIN, found $gov"
  builder=$(otelcol_builder)
  rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
  mkdir -p "$tmp"
  write_otelcol_manifest "$tmp/builder-config.yaml" "$tmp/build"
  log "builder --config $dir/builder-config.yaml (${K8S_COLD_BUILD[otelcol]} on 2 cores when cold)"
  if ! nice -n 10 "$builder" --config "$tmp/builder-config.yaml" >"$tmp/build.log" 2>&1; then
    out=$(grep -v '^go: downloading' "$tmp/build.log" | tail -30)
    rm -rf "$tmp"
    die "building otelcol $OTELCOL_VERSION with the builder failed:"$'\n'"$out"
  fi
  [ -x "$tmp/build/otelcol" ] || die "the builder produced no $tmp/build/otelcol"
  mv "$tmp/build/otelcol" "$tmp/otelcol"
  local got
  got=$(otelcol_version "$tmp/otelcol")
  [ "$got" = "${OTELCOL_VERSION#v}" ] || die "$tmp/otelcol reports version '$got', expected ${OTELCOL_VERSION#v}"
  # The manifest names its output path; the cached copy names where the build now lives.
  write_otelcol_manifest "$tmp/builder-config.yaml" "$dir/build"
  rm -f "$tmp/build.log"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

step_otelcol() {
  local dir="$CACHE/otelcol-$OTELCOL_VERSION"
  if [ "$(otelcol_version "$dir/otelcol")" = "${OTELCOL_VERSION#v}" ] &&
    cmp -s "$dir/builder-config.yaml" <(write_otelcol_manifest /dev/stdout "$dir/build"); then
    STEP_RESULT="cached"
  else
    build_otelcol "$dir"
    STEP_RESULT="built"
  fi
  mkdir -p "$BIN"
  ln -sfn "$dir/otelcol" "$BIN/otelcol"
  log "$BIN/otelcol -> $dir/otelcol (version $(otelcol_version "$dir/otelcol"), $(du -h "$dir/otelcol" | cut -f1))"
}

# ---- Argo Events (eventsource-service + sensor-service, off-cluster, JetStream bus) -------------
# Used by the benchmark's peer scenario P1 (bench/scenarios/p1-argo.ts), which runs Argo Events' own
# eventsource and sensor beside the framework. One binary, `argo-events`, with the two upstream
# subcommands eventsource-service and sensor-service (and `version`), configured only from
# environment variables (EVENTSOURCE_OBJECT / SENSOR_OBJECT, EVENTBUS_CONFIG, EVENTBUS_SUBJECT,
# POD_NAME, KUBECONFIG; bench/README.md says how P1 starts them). Cached in
# $CACHE/argo-events-<ver>/argo-events, with $BIN/argo-events linking to it.
#
# Not `go install`: v1.9.11's go.mod has no `replace` (so `go install .../cmd@v1.9.11` would
# work for the full binary), but the pruning below edits the sources, so like daprd/KEDA the module
# is downloaded, copied to a writable dir and built there as the main module, with its own go.mod
# and go.sum (default -mod=readonly, no go.mod edits, no tidy).
#
# Pruning (in the copy, never in the module cache). Upstream wires every event source and trigger
# by name in one function each, so every SDK (AWS, Azure, GCP, Pulsar, Kafka, ...) is compiled in:
#   pkg/eventsources/eventing.go  GetEventingServers: one `if len(eventSource.Spec.<X>) != 0 {...}`
#                                 block per source type; only ARGO_KEEP_SOURCES stay, and the
#                                 imports of the removed sources' packages go
#   pkg/sensors/trigger.go        GetTrigger: one `if trigger.Template.<X> != nil {...}` block per
#                                 trigger type; only ARGO_KEEP_TRIGGERS stay
#   pkg/sensors/context.go        SensorContext's client caches typed by the removed triggers' SDKs
#                                 (sarama, pulsar, lambda, openwhisk, eventhubs, servicebus, nats,
#                                 grpc) and their imports
#   pkg/sensors/triggers/fetch.go only the k8s and argo-workflow triggers use it (it pulls the S3,
#                                 git, ... artifact readers)
#   pkg/eventbus/driver.go        the NATS-streaming (stan) and Kafka bus drivers: each `dvr = ...`
#                                 line becomes an error return; JetStream stays
#   cmd/                          replaced by cmd/argo-events-lite/main.go (eventsource-service,
#                                 sensor-service, version): the controller, admission webhook and
#                                 lint commands are not built
# Two small patches make a second process on the same host possible without a cluster:
#   pkg/metrics/metrics.go        Run(ctx, addr): ARGO_EVENTS_METRICS_ADDR overrides addr. Upstream
#                                 binds ":7777" in both the eventsource and the sensor (one pod
#                                 each in Kubernetes), so two processes on one host collide, and
#                                 the second dies ("failed to start metrics server").
#   pkg/eventsources/common/webhook/webhook.go
#                                 the webhook server binds "$ARGO_EVENTS_WEBHOOK_HOST:<port>"
#                                 (upstream ":<port>"; unset keeps upstream behaviour)
# Nothing else is changed: the eventing, bus, filter and trigger code runs as released.
# Still compiled in: pkg/shared/util imports sarama and pkg/eventsources/events the aws-sdk-go,
# minio-go and stripe types (shared type packages; pruning them would mean editing them).
# Measured on 2 cores shared with other work (load 0.3-4, nice 19), modules already downloaded and
# an empty GOCACHE: 2 min 44 s wall, 3 min 48 s CPU (the full upstream ./cmd: 5 min 53 s CPU); 1069
# packages instead of 1914; binary 61 MiB instead of 106 MiB; each process's idle RSS about 48 MiB
# instead of 88. A rebuild with warm Go caches 4 s; a cached run 0.1 s.
ARGO_EVENTS_VERSION="v1.9.11"
ARGO_EVENTS_MODULE="github.com/argoproj/argo-events"
ARGO_EVENTS_COMMIT="d13fde07d944c081c25574305911908c80faa98e" # the tag's commit (the proxy's .info Origin)
ARGO_EVENTS_GO_MIN="1.26.0"                                   # the go directive of v1.9.11's go.mod
ARGO_KEEP_SOURCES=(Webhook)   # field names of EventSourceSpec
ARGO_KEEP_TRIGGERS=(HTTP Log) # field names of TriggerTemplate (Log: a trigger for debugging, no deps)


# argo_events_version FILE: the version the binary reports ("v1.9.11+d13fde0.dirty": -X ldflags
# set the tag and commit; "dirty" because of the pruning).
argo_events_version() { [ -x "$1" ] && "$1" version 2>/dev/null | head -1; }
argo_events_want_version() { printf '%s+%s.dirty\n' "$ARGO_EVENTS_VERSION" "${ARGO_EVENTS_COMMIT:0:7}"; }
argo_events_prune_list() { printf 'sources: %s\ntriggers: %s\n' "${ARGO_KEEP_SOURCES[*]}" "${ARGO_KEEP_TRIGGERS[*]}"; }

# argo_prune_blocks FILE PREFIX KEEP...: drops each block whose first line starts with PREFIX (a
# one-tab-indented `if` whose first identifier after PREFIX names the kind, e.g. "\tif
# trigger.Template." + "K8s != nil {") unless that name is in KEEP, through its closing "\t}" line.
argo_prune_blocks() {
  local file=$1 prefix=$2
  shift 2
  PRUNE_KEEP=" $* " PRUNE_PREFIX=$prefix awk '
    BEGIN { skip = 0; prefix = ENVIRON["PRUNE_PREFIX"]; keep = ENVIRON["PRUNE_KEEP"] }
    skip { if ($0 == "\t}") skip = 0; next }
    index($0, prefix) == 1 {
      name = substr($0, length(prefix) + 1); sub(/[^A-Za-z0-9].*$/, "", name)
      if (index(keep, " " name " ") == 0) { skip = 1; next }
    }
    { print }
  ' "$file" >"$file.pruned" || die "pruning $file failed"
  mv "$file.pruned" "$file"
}

# argo_events_prune SRC: the edits described above, each checked so that a changed upstream file
# fails loudly instead of building something else.
argo_events_prune() {
  local src=$1 f n
  # -- event sources
  f="$src/pkg/eventsources/eventing.go"
  argo_prune_blocks "$f" $'\tif len(eventSource.Spec.' "${ARGO_KEEP_SOURCES[@]}"
  n=$(grep -c $'^\tif len(eventSource.Spec.' "$f" || true)
  [ "$n" -eq "${#ARGO_KEEP_SOURCES[@]}" ] || die "$f: $n source blocks left, expected ${#ARGO_KEEP_SOURCES[@]}"
  # imports: keep a source package only if the remaining code names it (pkg.EventListener)
  local line p alias
  while IFS= read -r line; do
    p=$(sed -n 's|.*"github.com/argoproj/argo-events/pkg/eventsources/sources/\([^"]*\)".*|\1|p' <<<"$line")
    alias=$(awk '{print ($1 ~ /^"/) ? "" : $1}' <<<"$line")
    [ -n "$alias" ] || alias=${p##*/}
    if ! grep -q "[^A-Za-z0-9_]$alias\.EventListener" "$f"; then
      grep -vF -- "$line" "$f" >"$f.tmp" && mv "$f.tmp" "$f"
    fi
  done < <(grep 'argo-events/pkg/eventsources/sources/' "$f")
  # -- triggers
  f="$src/pkg/sensors/trigger.go"
  argo_prune_blocks "$f" $'\tif trigger.Template.' "${ARGO_KEEP_TRIGGERS[@]}"
  n=$(grep -c $'^\tif trigger.Template.' "$f" || true)
  [ "$n" -eq "${#ARGO_KEEP_TRIGGERS[@]}" ] || die "$f: $n trigger blocks left, expected ${#ARGO_KEEP_TRIGGERS[@]}"
  while IFS= read -r line; do
    p=$(sed -n 's|.*"github.com/argoproj/argo-events/pkg/sensors/triggers/\([^"]*\)".*|\1|p' <<<"$line")
    alias=$(awk '{print ($1 ~ /^"/) ? "" : $1}' <<<"$line")
    [ -n "$alias" ] || alias=${p##*/}
    if ! grep -q "[^A-Za-z0-9_]$alias\.New" "$f"; then
      grep -vF -- "$line" "$f" >"$f.tmp" && mv "$f.tmp" "$f"
    fi
  done < <(grep 'argo-events/pkg/sensors/triggers/' "$f")
  # -- the sensor context's SDK-typed client caches
  f="$src/pkg/sensors/context.go"
  local fields='kafkaProducers|pulsarProducers|natsConnections|awsLambdaClients|openwhiskClients|azureEventHubsClients|azureServiceBusClients|customTriggerClients'
  local imports='"github.com/Azure/azure-event-hubs-go/v3"|"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"|"github.com/IBM/sarama"|"github.com/apache/openwhisk-client-go/whisk"|"github.com/apache/pulsar-client-go/pulsar"|"github.com/aws/aws-sdk-go/service/lambda"|"github.com/nats-io/nats.go"|"google.golang.org/grpc"'
  n=$(grep -Ec "$fields|$imports" "$f" || true)
  [ "$n" -eq 32 ] || die "$f: $n lines name the pruned client caches or their imports, expected 32 (8 fields x 3 + 8 imports)"
  grep -Ev "$fields|$imports" "$f" >"$f.tmp" && mv "$f.tmp" "$f"
  # -- the artifact readers of the k8s / argo-workflow triggers
  [ -f "$src/pkg/sensors/triggers/fetch.go" ] || die "pkg/sensors/triggers/fetch.go missing"
  rm -f "$src/pkg/sensors/triggers/fetch.go" "$src/pkg/sensors/triggers/fetch_test.go"
  # -- the stan and kafka bus drivers
  f="$src/pkg/eventbus/driver.go"
  n=$(grep -Ec $'^\t\tdvr = (stansource|kafkasource|stansensor|kafkasensor)\\.' "$f" || true)
  [ "$n" -eq 4 ] || die "$f: $n stan/kafka driver lines, expected 4"
  sed -i -E 's/^\t\tdvr = (stansource|kafkasource|stansensor|kafkasensor)\..*$/\t\treturn nil, fmt.Errorf("this argo-events build has the JetStream bus only (pruned: \1)")/' "$f"
  sed -i -E '/"github.com\/argoproj\/argo-events\/pkg\/eventbus\/(stan|kafka)\//d' "$f"
  # -- metrics address (env override)
  f="$src/pkg/metrics/metrics.go"
  grep -q '^func (m \*Metrics) Run(ctx context.Context, addr string) {$' "$f" || die "$f: Run(ctx, addr) changed"
  sed -i 's|^func (m \*Metrics) Run(ctx context.Context, addr string) {$|&\n\tif a := os.Getenv("ARGO_EVENTS_METRICS_ADDR"); a != "" { // ofevents: off-cluster, 2 processes on 1 host\n\t\taddr = a\n\t}|' "$f"
  grep -q '^	"os"$' "$f" || sed -i '0,/^import (/s//import (\n\t"os"/' "$f"
  # -- webhook bind host (env)
  f="$src/pkg/eventsources/common/webhook/webhook.go"
  n=$(grep -c 'Addr:    fmt.Sprintf(":%s", route.Context.Port),' "$f" || true)
  [ "$n" -eq 1 ] || die "$f: the server Addr line changed"
  sed -i 's|Addr:    fmt.Sprintf(":%s", route.Context.Port),|Addr:    fmt.Sprintf("%s:%s", os.Getenv("ARGO_EVENTS_WEBHOOK_HOST"), route.Context.Port), // ofevents: bind host|' "$f"
  grep -q '^	"os"$' "$f" || sed -i '0,/^import (/s//import (\n\t"os"/' "$f"
  # -- the command: only the two data-plane services
  rm -rf "$src/cmd"
  mkdir -p "$src/cmd/argo-events-lite"
  cat >"$src/cmd/argo-events-lite/main.go" <<'EOF'
// Written by scripts/test-setup.sh (the benchmark's P1): upstream cmd/ without the controller,
// admission webhook and lint commands. The subcommands run upstream's Start functions unchanged.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	argoevents "github.com/argoproj/argo-events"
	eventsourcecmd "github.com/argoproj/argo-events/pkg/eventsources/cmd"
	sensorcmd "github.com/argoproj/argo-events/pkg/sensors/cmd"
)

func main() {
	root := &cobra.Command{Use: "argo-events", Short: "Argo Events eventsource and sensor (pruned build)"}
	root.AddCommand(&cobra.Command{Use: "eventsource-service", Short: "Start an EventSource service",
		Run: func(*cobra.Command, []string) { eventsourcecmd.Start() }})
	root.AddCommand(&cobra.Command{Use: "sensor-service", Short: "Start a Sensor service",
		Run: func(*cobra.Command, []string) { sensorcmd.Start() }})
	root.AddCommand(&cobra.Command{Use: "version", Short: "Print the version",
		Run: func(*cobra.Command, []string) { fmt.Println(argoevents.GetVersion().Version) }})
	if err := root.Execute(); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}
EOF
  gofmt -l "$src/pkg/eventsources/eventing.go" "$src/pkg/sensors" "$src/pkg/eventbus/driver.go" >/dev/null ||
    die "gofmt cannot parse the pruned files"
}

# build_argo_events DIR: the pruned build described above, into DIR/argo-events (via DIR.tmp.<pid>).
build_argo_events() {
  local dir=$1
  local tmp="$dir.tmp.$$"
  local gov
  gov=$(go env GOVERSION)
  gov=${gov#go}
  version_ge "$gov" "$ARGO_EVENTS_GO_MIN" || die "argo-events $ARGO_EVENTS_VERSION needs Go >= $ARGO_EVENTS_GO_MIN, found $gov"
  rm -rf "$dir".tmp.* # leftovers of an interrupted or failed run
  mkdir -p "$tmp"
  log "go mod download $ARGO_EVENTS_MODULE@$ARGO_EVENTS_VERSION"
  go mod download -json "$ARGO_EVENTS_MODULE@$ARGO_EVENTS_VERSION" >"$tmp/download.json" 2>&1 ||
    die "go mod download $ARGO_EVENTS_MODULE@$ARGO_EVENTS_VERSION failed: $(cat "$tmp/download.json")"
  local src
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/download.json")
  [ -f "$src/go.mod" ] || die "no module dir in the output of go mod download: $(cat "$tmp/download.json")"
  cp -r "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"
  argo_events_prune "$tmp/src"
  argo_events_prune_list >"$tmp/pruned.txt"

  local pkg="github.com/argoproj/argo-events"
  log "go build ./cmd/argo-events-lite (pruned: sources ${ARGO_KEEP_SOURCES[*]}, triggers ${ARGO_KEEP_TRIGGERS[*]}, JetStream bus; 3-7 min on 2 cores when cold)"
  if ! (cd "$tmp/src" && nice -n 10 go build -trimpath \
    -ldflags "-s -w -X $pkg.version=$ARGO_EVENTS_VERSION -X $pkg.gitTag=$ARGO_EVENTS_VERSION -X $pkg.gitCommit=$ARGO_EVENTS_COMMIT -X $pkg.gitTreeState=dirty" \
    -o "$tmp/argo-events" ./cmd/argo-events-lite) >"$tmp/build.log" 2>&1; then
    local out
    out=$(grep -v '^go: downloading' "$tmp/build.log" | tail -30)
    rm -rf "$tmp"
    die "go build ./cmd/argo-events-lite ($ARGO_EVENTS_VERSION) failed:"$'\n'"$out"
  fi
  local got
  got=$(argo_events_version "$tmp/argo-events")
  [ "$got" = "$(argo_events_want_version)" ] || die "$tmp/argo-events reports version '$got', expected $(argo_events_want_version)"
  rm -rf "$tmp/src" "$tmp/download.json" "$tmp/build.log"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

step_argo_events() {
  local dir="$CACHE/argo-events-$ARGO_EVENTS_VERSION"
  if [ "$(argo_events_version "$dir/argo-events")" = "$(argo_events_want_version)" ] &&
    [ "$(cat "$dir/pruned.txt" 2>/dev/null)" = "$(argo_events_prune_list)" ]; then
    STEP_RESULT="cached"
  else
    build_argo_events "$dir"
    STEP_RESULT="built"
  fi
  mkdir -p "$BIN"
  ln -sfn "$dir/argo-events" "$BIN/argo-events"
  log "$BIN/argo-events -> $dir/argo-events (version $(argo_events_version "$dir/argo-events"), $(du -h "$dir/argo-events" | cut -f1))"
}

# ---- main --------------------------------------------------------------------------------------
main() {
  log "cache: $CACHE"
  mkdir -p "$CACHE" "$BIN"
  run_step prereqs step_prereqs
  run_step apt step_apt
  run_step rabbitmq step_rabbitmq
  run_step nats-server step_nats
  run_step argo-events step_argo_events
  run_step kafka step_kafka
  run_step daprd step_daprd
  run_step etcd step_etcd
  run_step kube-apiserver step_kube_apiserver
  run_step kube-controller-manager step_kube_controller_manager
  run_step keda step_keda
  run_step otelcol step_otelcol
  log "== summary"
  local line
  for line in "${SUMMARY[@]}"; do log "  $line"; done
  log "  $(printf '%-23s' total) $(elapsed_since "$SCRIPT_START")"
}

main "$@"
