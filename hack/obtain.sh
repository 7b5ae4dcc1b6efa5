#!/usr/bin/env bash
# Build or download one real component into the version-keyed cache.
# Usage: hack/obtain.sh NAME   (kubernetes | etcd | containerd | node-packages | temporal | opa | helm
#                               | kafka | benthos | mosquitto | coredns | temporal-test-server | jaeger
#                               | prometheus | prometheus-operator-crds | keda | kserve | s3proxy | browser)
# Prints nothing on a cache hit; every build is from the package registries only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${AIOS_CACHE:-$HOME/.cache/aios}
name=${1:?component name}
if [ "$name" = all ]; then
  # What is only downloaded (Debian's packages, Maven's jars) comes in beside the Go builds;
  # one after another, so apt and Maven each run once at a time. The Go builds run in two
  # queues: one compiles while the other downloads its modules or links on a single core.
  # Not KServe's controller, which only `--with kserve` runs: built when first needed (the
  # test session builds it beside its tests, tests/conftest.py).
  queue() { for c in "$@"; do "$0" "$c" || return; done; }
  queue node-packages mosquitto kafka temporal-test-server s3proxy browser & fetched=$!
  queue jaeger prometheus prometheus-operator-crds keda & second=$!
  queue etcd kubernetes containerd temporal opa helm coredns
  wait "$second"; wait "$fetched"; exit
fi
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# One build of a component at a time: `make` obtains components and images side by side,
# and both may need the same one (CoreDNS); the second waits and finds it built.
mkdir -p "$cache"
exec 9>"$cache/.obtain-$name.lock"
flock 9

# A build's scratch folder, removed however the build ends: done, failed, or interrupted.
work=
trap '[ -z "$work" ] || rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# scratch [DIR]: a fresh scratch folder (DIR, emptied, or a new temporary one), made current.
scratch() {
  if [ $# -gt 0 ]; then work=$1; rm -rf "$work"; mkdir -p "$work"; else work=$(mktemp -d); fi
  cd "$work"
}
build_done() { [ -f "$1/.complete" ]; }
# apt_install PACKAGE...: Debian packages the site runs (as root, or through sudo).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  local wait=(-o DPkg::Lock::Timeout=600)  # another install (the images' tools) may hold dpkg
  $sudo apt-get install "${wait[@]}" -y -q "${missing[@]}" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install "${wait[@]}" -y -q "${missing[@]}" >/dev/null; }
}
mark_done() { touch "$1/.complete"; }
# go_install DEST PACKAGE@VERSION [LDFLAGS]: a module without replace directives.
go_install() {
  build_done "$1" && return 0
  mkdir -p "$1/bin"
  GOBIN=$1/bin go install -trimpath -ldflags "-s -w ${3:-}" "$2"
  mark_done "$1"
}

case $name in
kubernetes)
  # The control plane, kubectl, and the node's kubelet and kube-proxy, from one wrapper module.
  cmds="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
  dest=$cache/kubernetes/$KUBERNETES_VERSION
  for c in $cmds; do [ -x "$dest/bin/$c" ] || rm -f "$dest/.complete"; done
  build_done "$dest" && exit 0
  mkdir -p "$dest/bin"; scratch "$dest/wrapper"
  go mod init local/k8sbins >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  staging=v0.${KUBERNETES_VERSION#v1.}
  for m in $(sed -nE 's#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@$staging"
  done
  gd=$(sed -nE 's/^godebug (.*)/\1/p' "$gomod"); [ -z "$gd" ] || go mod edit -godebug="$gd"
  pkgs=$(for c in $cmds; do printf 'k8s.io/kubernetes/cmd/%s ' "$c"; done)
  go get -tool $(for p in $pkgs; do printf '%s@%s ' "$p" "$KUBERNETES_VERSION"; done)
  minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  go build -trimpath -pgo=off -ldflags "$ld" -o "$dest/bin/" $pkgs
  mark_done "$dest";;
etcd)
  dest=$cache/etcd/$ETCD_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin"; scratch
  go mod init local/etcdbin >/dev/null 2>&1
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$dest/bin/etcd" go.etcd.io/etcd/server/v3
  mark_done "$dest";;
containerd)  # the node's container runtime: daemon, runc shim and ctr, without the storage drivers it does not use
  dest=$cache/containerd/$CONTAINERD_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin"; m=github.com/containerd/containerd/v2
  GOBIN=$dest/bin go install -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" \
    -ldflags "-s -w -X $m/version.Version=${CONTAINERD_VERSION#v} -X $m/version.Package=$m" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$m/cmd/ctr@$CONTAINERD_VERSION"
  mark_done "$dest";;
browser)  # the console's browser test: Debian's Chromium and its WebDriver
  apt_install chromium chromium-driver;;
node-packages)  # what the real node runs from Debian: runc, the CNI plugins, iptables for kube-proxy
  apt_install runc containernetworking-plugins iptables conntrack curl;;
temporal) go_install "$cache/temporal/$TEMPORAL_CLI_VERSION" "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION";;
coredns)  # cluster DNS for the real node, built into an image by aios.stack.images
  go_install "$cache/coredns/$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION";;
opa) go_install "$cache/opa/$OPA_VERSION" "github.com/open-policy-agent/opa@$OPA_VERSION" \
       "-X github.com/open-policy-agent/opa/v1/version.Version=${OPA_VERSION#v}";;
helm)  # without these ldflags helm assumes Kubernetes v1.20 when templating
  minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
  go_install "$cache/helm/$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor";;
benthos)  # a wrapper module: `go install pkg@v` also asks the proxy for @v/list, which it refuses
  dest=$cache/benthos/$BENTHOS_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin"; scratch
  go mod init local/benthosbin >/dev/null 2>&1
  go get -tool "github.com/redpanda-data/benthos/v4/cmd/benthos@$BENTHOS_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$dest/bin/benthos" github.com/redpanda-data/benthos/v4/cmd/benthos
  mark_done "$dest";;
jaeger)  # Jaeger v2 (module v1.x = v2.x), the site's trace backend; a wrapper module for its replace
  dest=$cache/jaeger/$JAEGER_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin"; scratch
  go mod init local/jaegerbin >/dev/null 2>&1
  go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
  go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$dest/bin/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
  mark_done "$dest";;
prometheus)  # Prometheus 3 (module v0.3xx = 3.x); of its service discoveries only Kubernetes'
  dest=$cache/prometheus/$PROMETHEUS_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin"
  release=3.${PROMETHEUS_VERSION#v0.3}  # v0.316.0 is Prometheus 3.16.0
  GOBIN=$dest/bin go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
  mark_done "$dest";;
prometheus-operator-crds)  # the kinds a cluster's Prometheus Operator serves that the chart uses
  dest=$cache/prometheus-operator-crds/$PROMETHEUS_OPERATOR_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/crds"
  module=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  for kind in servicemonitors podmonitors prometheusrules; do
    install -m 0644 "$module/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$dest/crds/"
  done
  mark_done "$dest";;
keda)  # KEDA's operator and metrics adapter (runners scaled on Kafka lag) in one build, and its CRDs
  dest=$cache/keda/$KEDA_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin" "$dest/crds"; scratch
  go mod init local/kedabins >/dev/null 2>&1
  # KEDA's own go.mod lines, which a dependent module does not inherit
  go mod edit -replace github.com/nexus-rpc/nexus-proto-annotations@v0.1.0=github.com/nexus-rpc/nexus-proto-annotations@v0.1.1-0.20260629224316-835bd8d49cb4
  go mod edit -exclude github.com/go-chi/chi/v5@v5.2.3
  m=github.com/kedacore/keda/v2
  go get -tool "$m/cmd/operator@$KEDA_VERSION" "$m/cmd/adapter@$KEDA_VERSION"
  go build -trimpath -ldflags "-s -w -X $m/version.Version=${KEDA_VERSION#v}" -o "$work/out/" "$m/cmd/operator" "$m/cmd/adapter"
  mv "$work/out/operator" "$dest/bin/keda-operator"; mv "$work/out/adapter" "$dest/bin/keda-adapter"
  module=$(go mod download -json "$m@$KEDA_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  install -m 0644 "$module"/config/crd/bases/*.yaml "$dest/crds/"
  mark_done "$dest";;
kserve)  # the KServe controller (RawDeployment: no Knative, no Istio), its kinds, webhooks and config
  dest=$cache/kserve/$KSERVE_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/bin" "$dest/crds" "$dest/config"; scratch
  go mod init local/kservebin >/dev/null 2>&1
  # KServe's own go.mod lines, which a dependent module does not inherit
  go mod edit -replace sigs.k8s.io/controller-runtime=sigs.k8s.io/controller-runtime@v0.19.7
  go mod edit -exclude google.golang.org/grpc/stats/opentelemetry@v0.0.0-00010101000000-000000000000
  m=github.com/kserve/kserve
  go get -tool "$m/cmd/manager@$KSERVE_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$dest/bin/kserve-controller" "$m/cmd/manager"
  module=$(go mod download -json "$m@$KSERVE_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  install -m 0644 "$module"/config/crd/full/serving.kserve.io_*.yaml "$dest/crds/"
  install -m 0644 "$module/config/webhook/manifests.yaml" "$module/config/configmap/inferenceservice.yaml" "$dest/config/"
  mark_done "$dest";;
kafka)
  dest=$cache/kafka/$KAFKA_VERSION
  # Kafka's own perf tools (ProducerPerformance, EndToEndLatency: bench/pipeline's independent
  # load generator and latency reference), one jar beside the broker's; added to an older cache.
  tools=(dependency:copy -Dartifact="org.apache.kafka:kafka-tools:$KAFKA_VERSION" -DoutputDirectory="$dest/libs")
  if build_done "$dest"; then [ -f "$dest/libs/kafka-tools-$KAFKA_VERSION.jar" ] || mvn -q -B "${tools[@]}"; exit 0; fi
  mkdir -p "$dest/libs"; scratch
  cat > pom.xml <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>local</groupId><artifactId>kafka-runtime</artifactId><version>1</version><packaging>pom</packaging>
 <dependencies>
  <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
 </dependencies></project>
POM
  mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs"
  # The release tarball ships the SLF4J 1.x binding for log4j2; the pom does not pull it.
  log4j=$(ls "$dest/libs" | sed -nE 's/^log4j-core-(.*)\.jar$/\1/p')
  mvn -q -B dependency:copy -Dartifact="org.apache.logging.log4j:log4j-slf4j-impl:$log4j" -DoutputDirectory="$dest/libs"
  mvn -q -B "${tools[@]}"
  mark_done "$dest";;
mosquitto) apt_install mosquitto;;
s3proxy)  # an S3 server over a directory: the site's model mirror as object storage, for KServe
  dest=$cache/s3proxy/$S3PROXY_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/libs"; scratch
  cat > pom.xml <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>local</groupId><artifactId>s3proxy-runtime</artifactId><version>1</version><packaging>pom</packaging>
 <dependencies>
  <dependency><groupId>org.gaul</groupId><artifactId>s3proxy</artifactId><version>$S3PROXY_VERSION</version></dependency>
 </dependencies></project>
POM
  mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs"
  mark_done "$dest";;
temporal-test-server)  # Temporal's time-skipping test server (Java), for the workflow timer tests
  dest=$cache/temporal-test-server/$TEMPORAL_TEST_SERVER_VERSION; build_done "$dest" && exit 0
  mkdir -p "$dest/libs" "$dest/bin"; scratch
  cat > pom.xml <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>local</groupId><artifactId>temporal-test-server-runtime</artifactId><version>1</version><packaging>pom</packaging>
 <dependencies>
  <dependency><groupId>io.temporal</groupId><artifactId>temporal-test-server</artifactId><version>$TEMPORAL_TEST_SERVER_VERSION</version></dependency>
 </dependencies></project>
POM
  mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs"
  # The SDK starts it as `EXE PORT [ARGS...]`, as it would the native build it downloads.
  printf '#!/bin/sh\nexec java -cp "$(dirname "$0")/../libs/*" io.temporal.testserver.TestServer "$@"\n' > "$dest/bin/temporal-test-server"
  chmod +x "$dest/bin/temporal-test-server"
  mark_done "$dest";;
*) echo "unknown component: $name" >&2; exit 2;;
esac
