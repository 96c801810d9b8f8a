#!/usr/bin/env bash
# A three-zone kind cluster with the Kynamo image, CRDs and operator, for tests/e2e.
# Needs docker, kind and kubectl. Usage: tests/e2e/kind-up.sh [cluster-name]; then
#   KYNAMO_E2E=1 python -m pytest tests/e2e
set -euo pipefail
NAME="${1:-kynamo-e2e}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cat <<YAML | kind create cluster --name "$NAME" --config -
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels: {topology.kubernetes.io/zone: zone-a}
  - role: worker
    labels: {topology.kubernetes.io/zone: zone-b}
  - role: worker
    labels: {topology.kubernetes.io/zone: zone-c}
YAML
docker build -t kynamo:e2e "$ROOT"
kind load docker-image kynamo:e2e --name "$NAME"
kubectl apply -f "$ROOT/crds/"
kubectl create namespace kynamo-e2e --dry-run=client -o yaml | kubectl apply -f -
# The operator must reach the storage pods' IPs: run it in the cluster (charts/, when it ships one)
# or beside it on a Linux host, where kind's pod network is routable:
#   kynamo operator --namespace kynamo-e2e --image kynamo:e2e --standalone
echo "cluster $NAME ready; run: KYNAMO_E2E=1 python -m pytest tests/e2e"
