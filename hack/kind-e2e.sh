#!/usr/bin/env bash
# End to end on a real cluster (kind): build and load both images, install a minimal Prometheus and
# the chart, roll the canary example out to a good model (promoted) and then to a bad one (rolled
# back), with traffic from a Job, asserting each outcome with `kubectl wait`; then tear down.
# Without docker (and a running daemon), kind or kubectl it says so and exits 0.
#
#   CLUSTER=mlrollouts-e2e     kind cluster name
#   KIND_NODE_IMAGE=...        node image, e.g. kindest/node:v1.28.15 (default: kind's own)
#   KEEP_CLUSTER=1             leave the cluster running at the end (to look around)
#   TIMEOUT=420s               how long each wait may take
#   PYTHON=.venv/bin/python    Python with the project installed (trains the models, installs the chart)
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "kind-e2e: $1; skipping the kind end-to-end run."
  exit 0
}
command -v docker >/dev/null 2>&1 || skip "docker not found (https://docs.docker.com/engine/install/)"
docker info >/dev/null 2>&1 || skip "the Docker daemon is not reachable (docker info failed)"
command -v kind >/dev/null 2>&1 || skip "kind not found (go install sigs.k8s.io/kind@latest)"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not found"

CLUSTER=${CLUSTER:-mlrollouts-e2e}
TIMEOUT=${TIMEOUT:-420s}
PYTHON=${PYTHON:-.venv/bin/python}
TAG=e2e
NS=mlrollouts-e2e
SYSTEM_NS=mlrollouts-system
WORK=$(mktemp -d)
export KUBECONFIG="$WORK/kubeconfig"

log() { printf '\n=== %s\n' "$*"; }

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "kind-e2e: FAILED; state of the cluster:"
    kubectl get mdep,deploy,pods,svc -A -o wide || true
    kubectl -n "$NS" get mdep fraud -o yaml || true
    kubectl -n "$SYSTEM_NS" logs deploy/mlrollouts --tail=200 || true
  fi
  if [ "${KEEP_CLUSTER:-0}" = "1" ]; then
    echo "kind-e2e: keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT

log "cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --config kind-config.yaml --kubeconfig "$KUBECONFIG" --wait 180s \
  ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}

log "images"
IMAGE_TAG=$TAG bash hack/images.sh
kind load docker-image --name "$CLUSTER" "mlrollouts/operator:$TAG" "mlrollouts/serving:$TAG"

log "Prometheus (pod discovery)"
kubectl apply -f - <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: monitoring}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-prometheus}
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-prometheus}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: prometheus, namespace: monitoring}
data:
  prometheus.yml: |
    global: {scrape_interval: 5s, evaluation_interval: 5s}
    scrape_configs:
      - job_name: mlrollouts-pods
        kubernetes_sd_configs: [{role: pod}]
        relabel_configs:
          - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_managed_by]
            regex: mlrollouts
            action: keep
          - source_labels: [__meta_kubernetes_pod_container_port_name]
            regex: http
            action: keep
          - source_labels: [__meta_kubernetes_namespace]
            target_label: namespace
          - source_labels: [__meta_kubernetes_pod_name]
            target_label: pod
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: monitoring}
spec:
  replicas: 1
  selector: {matchLabels: {app: prometheus}}
  template:
    metadata: {labels: {app: prometheus}}
    spec:
      serviceAccountName: prometheus
      securityContext: {runAsNonRoot: true, runAsUser: 65534, fsGroup: 65534}
      containers:
        - name: prometheus
          image: prom/prometheus:v2.55.1
          args: [--config.file=/etc/prometheus/prometheus.yml, --storage.tsdb.path=/prometheus,
                 --storage.tsdb.retention.time=2h]
          ports: [{name: http, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /-/ready, port: http}}
          volumeMounts:
            - {name: config, mountPath: /etc/prometheus}
            - {name: data, mountPath: /prometheus}
      volumes:
        - {name: config, configMap: {name: prometheus}}
        - {name: data, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: monitoring}
spec:
  selector: {app: prometheus}
  ports: [{name: http, port: 9090, targetPort: http}]
YAML
kubectl -n monitoring rollout status deploy/prometheus --timeout="$TIMEOUT"

log "chart"
if command -v helm >/dev/null 2>&1; then
  helm install mlrollouts charts/mlrollouts -n "$SYSTEM_NS" --create-namespace --wait --timeout 5m \
    --set image.tag=$TAG --set serving.image=mlrollouts/serving:$TAG \
    --set prometheus.address=http://prometheus.monitoring.svc:9090
else
  # the Helm engine from the project's environment (helm-python-sdk), no helm binary needed
  "$PYTHON" - "$KUBECONFIG" "$SYSTEM_NS" "$TAG" <<'PY'
import sys
import helm_python as helm
kubeconfig, namespace, tag = sys.argv[1:4]
values = {
    "image": {"tag": tag},
    "serving": {"image": f"mlrollouts/serving:{tag}"},
    "prometheus": {"address": "http://prometheus.monitoring.svc:9090"},
}
with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as cfg:
    release = cfg.install("charts/mlrollouts", "mlrollouts", values, namespace=namespace,
                          create_namespace=True, wait="watcher", timeout=300)
    print(f"installed {release['name']} revision {release['revision']}: {release['status']}")
PY
fi
kubectl -n "$SYSTEM_NS" rollout status deploy/mlrollouts --timeout="$TIMEOUT"

log "models: a good v1 and v2, a bad v3 (labels flipped), served over HTTP inside the cluster"
mkdir -p "$WORK/models"
"$PYTHON" - "$WORK/models" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

out = Path(sys.argv[1])
X, y = load_breast_cancer(return_X_y=True)
X = X.astype(np.float32)
for name, labels, c in (("v1", y, 1.0), ("v2", y, 0.5), ("v3", 1 - y, 1.0)):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(X, labels)
    onx = to_onnx(model, X[:1], options={"zipmap": False}, target_opset=17)
    (out / f"fraud-{name}.onnx").write_bytes(onx.SerializeToString())
(out / "rows.json").write_text(json.dumps(X[::3].round(4).tolist()))
PY
kubectl create namespace "$NS"
kubectl -n "$NS" create configmap models --from-file="$WORK/models"
kubectl -n "$NS" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: model-store}
spec:
  selector: {matchLabels: {app: model-store}}
  template:
    metadata: {labels: {app: model-store}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
        - name: http
          image: mlrollouts/serving:$TAG
          command: [python, -m, http.server, "8000", --directory, /models]
          ports: [{name: http, containerPort: 8000}]
          readinessProbe: {tcpSocket: {port: http}}
          volumeMounts: [{name: models, mountPath: /models}]
      volumes: [{name: models, configMap: {name: models}}]
---
apiVersion: v1
kind: Service
metadata: {name: model-store}
spec:
  selector: {app: model-store}
  ports: [{port: 80, targetPort: http}]
YAML
kubectl -n "$NS" rollout status deploy/model-store --timeout="$TIMEOUT"

STORE="http://model-store.$NS.svc"
set_model() {  # set_model VERSION: point the ModelDeployment at another model file
  kubectl -n "$NS" patch mdep fraud --type merge \
    -p "{\"spec\":{\"model\":{\"uri\":\"$STORE/fraud-$1.onnx\",\"version\":\"$1\"}}}"
}
wait_for() {  # wait_for JSONPATH VALUE
  kubectl -n "$NS" wait mdep/fraud --for=jsonpath="$1"="$2" --timeout="$TIMEOUT"
}
field() { kubectl -n "$NS" get mdep fraud -o jsonpath="$1"; }

log "the canary example, with short steps, first revision"
# The example as shipped, pointed at this namespace, the model store and steps of seconds.
sed "s/namespace: default/namespace: $NS/" examples/canary/modeldeployment.yaml | kubectl apply -f -
kubectl -n "$NS" patch mdep fraud --type merge -p "$(cat <<JSON
{"spec": {
  "model": {"uri": "$STORE/fraud-v1.onnx", "format": "onnx", "version": "v1"},
  "serving": {"replicas": 1, "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
  "rollout": {
    "steps": [{"shadow": {"percent": 100, "duration": "30s"}},
              {"weight": 20, "duration": "30s"}, {"weight": 50, "duration": "30s"}],
    "analysis": {"interval": "10s", "minSamples": 20, "failureLimit": 2}}}}
JSON
)"
wait_for '{.status.observedGeneration}' 2
wait_for '{.status.phase}' Healthy
first=$(field '{.status.stableRevision}')
echo "stable revision: $first"

log "traffic"
kubectl -n "$NS" apply -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: traffic}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
        - name: traffic
          image: mlrollouts/serving:$TAG
          command:
            - python
            - -c
            - |
              import json, random, time, urllib.request
              rows = json.load(urllib.request.urlopen("$STORE/rows.json"))
              url = "http://fraud.$NS.svc/v2/models/fraud/infer"
              ok = failed = 0
              end = time.time() + 900
              while time.time() < end:
                  row = random.choice(rows)
                  body = json.dumps({"inputs": [{"name": "X", "shape": [1, len(row)],
                                                 "datatype": "FP32", "data": row}]}).encode()
                  request = urllib.request.Request(url, body, {"content-type": "application/json",
                                                               "x-user-id": str(random.randrange(1000))})
                  try:
                      urllib.request.urlopen(request, timeout=5).read()
                      ok += 1
                  except OSError:
                      failed += 1
                  if (ok + failed) % 500 == 0:
                      print(f"{ok} ok, {failed} failed", flush=True)
                  time.sleep(0.05)
YAML

log "a good model: promoted"
set_model v2
wait_for '{.status.observedGeneration}' 3
wait_for '{.status.phase}' Healthy
second=$(field '{.status.stableRevision}')
[ "$second" != "$first" ] || { echo "kind-e2e: v2 was not promoted (stable still $first)"; exit 1; }
echo "promoted: $first -> $second"

log "a bad model: rolled back"
set_model v3
wait_for '{.status.observedGeneration}' 4
wait_for '{.status.phase}' Degraded
[ "$(field '{.status.stableRevision}')" = "$second" ] || { echo "kind-e2e: the stable revision changed"; exit 1; }
failed=$(field '{.status.failedRevision}')
[ -n "$failed" ] || { echo "kind-e2e: no failedRevision recorded"; exit 1; }
echo "rolled back: $failed, still serving $second"
kubectl -n "$NS" get mdep fraud

log "kind-e2e: PASSED"
