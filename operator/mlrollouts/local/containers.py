"""The container runtime of the process kubelet: each pod container runs from its image with podman.

``mlrollouts local up --runtime podman`` (``python -m mlrollouts.local.kubelet --runtime podman``)
keeps everything the process kubelet does (Deployments, probes, restarts, Pod status, Endpoints,
Prometheus targets) and changes only how a container runs: ``podman run`` of the pod template's
``image`` (never pulled: build the images with ``make images``) with its ``command`` (the
entrypoint), ``args``, ``env``, ``workingDir``, ``securityContext`` and ``volumeMounts``, so the
manifests the operator writes are exercised as a cluster would run them.

Networking: every container shares the host's network namespace (``--network host``). The process
kubelet already gives each container port a free loopback port and rewrites ``--port N``,
``--*-port N``, ``*PORT`` variables and ``--host 0.0.0.0`` to it; with host networking that rewrite
keeps working unchanged, so probes, Endpoints, Prometheus targets, the service proxy and the API
emulator (all on 127.0.0.1) are reached exactly as in process mode. Publishing ports instead would
need a network per pod, a second address scheme for Endpoints, and the emulator reachable from
inside that network: more moving parts for the same result. ``http://host:N`` URLs in arguments
(the operator's ``--liveness``) are rewritten the same way.

What a container gets, as on a kubelet:

- ``securityContext`` (pod and container level): ``runAsUser``/``runAsGroup`` (``--user``),
  ``fsGroup`` and ``supplementalGroups`` (``--group-add``), ``runAsNonRoot`` (checked against the
  effective user, the image's when none is set: a root or non-numeric user fails the pod),
  ``readOnlyRootFilesystem`` (``--read-only``), ``capabilities`` (``--cap-drop``/``--cap-add``),
  ``allowPrivilegeEscalation: false`` (``no-new-privileges``), ``privileged`` and the
  ``RuntimeDefault``/``Unconfined`` seccomp profiles. Other fields fail the pod, naming the field.
- volumes: the host directories :mod:`mlrollouts.local.volumes` materialises, bind-mounted at their
  ``mountPath`` (Secrets and ConfigMaps read-only, ``readOnly`` mounts read-only); an ``emptyDir``
  is world-writable and Secret/ConfigMap files are readable by the ``fsGroup``, as a kubelet makes
  them.
- API access: with a ServiceAccount token mounted (``automountServiceAccountToken`` not false), a
  kubeconfig for ``system:serviceaccount:<namespace>:<name>`` pointing at the emulator, mounted
  read-only with ``KUBECONFIG`` naming it (the emulator speaks plain HTTP, so the in-cluster
  configuration, which needs TLS, cannot be used).
- ``file://`` URIs in the arguments (a model file of the host): the file's directory is
  bind-mounted read-only at the same path, the playground's stand-in for a model store.
- ``resources``: ``limits.memory`` (``--memory``, no swap beyond it: an OOM kill as on a node),
  ``limits.cpu`` (``--cpus``, a CFS quota) and ``requests.cpu`` (``--cpu-shares``, 1024 per CPU, as
  a kubelet on cgroup v1 sets them); ``requests.memory`` only matters to a scheduler and an
  eviction manager, which a one-machine playground has not. Another resource (``nvidia.com/gpu``,
  ``ephemeral-storage``, hugepages) fails the pod, naming it. Where podman has no ``memory`` or
  ``cpu`` cgroup controller (a rootless engine without delegation), the kubelet says once that the
  limits are not enforced and runs the containers without them.

Containers carry a label naming the kubelet's work dir; a kubelet removes the containers of its
label when it starts and when it stops, so none outlive the playground. Engine settings come from
``hack/containers.conf`` (runc, cgroupfs, nofile/nproc limits) through ``CONTAINERS_CONF`` when the
variable is not set.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

import yaml
from kubernetes.utils import parse_quantity

from mlrollouts.local.lifeline import die_with_parent
from mlrollouts.local.volumes import MissingReference

log = logging.getLogger("mlrollouts.kubelet")

Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[3]
CONTAINERS_CONF = REPO / "hack" / "containers.conf"
INSTALL_HINT = "apt-get install -y buildah podman mmdebstrap uidmap runc, then `make images`"
LABEL = "mlrollouts.io/local-kubelet"
KUBECONFIG_PATH = "/var/run/mlrollouts/kubeconfig"
POD_SECURITY_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "supplementalGroups",
    "seccompProfile",
    "fsGroupChangePolicy",
}
CONTAINER_SECURITY_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "privileged",
    "capabilities",
    "seccompProfile",
}
# variables podman itself reads: passed as NAME=VALUE instead of through its own environment
ENGINE_VARIABLES = {"PATH", "HOME", "CONTAINERS_CONF", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"}


def engine_environment() -> dict[str, str]:
    """The environment of a podman command: PATH, HOME and the engine settings of this project."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "XDG_RUNTIME_DIR", "CONTAINERS_CONF")}
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def find_podman() -> str | None:
    return shutil.which("podman")


@dataclass(frozen=True)
class Podman:
    """Runs podman with the engine settings of :func:`engine_environment`."""

    binary: str

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            env=engine_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def inspect_image(self, name: str) -> Obj:
        return dict(json.loads(self("image", "inspect", name).stdout)[0])

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0


def rewrite_url_ports(argv: list[str], ports: dict[int, int]) -> list[str]:
    """``http://0.0.0.0:8080/x`` -> ``http://127.0.0.1:<local port of 8080>/x`` in every argument."""

    def one(match: re.Match[str]) -> str:
        scheme, host, port = match.group(1), match.group(2), int(match.group(3))
        if port not in ports:
            return match.group(0)
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"{scheme}{host}:{ports[port]}"

    return [re.sub(r"(https?://)([\w.\-]+|\[[^\]]*\]):(\d+)", one, arg) for arg in argv]


def file_uri_dirs(argv: list[str]) -> list[Path]:
    """Host directories holding the files named by ``file://`` URIs in ``argv`` (``--x=file://..`` too)."""
    found: list[Path] = []
    for arg in argv:
        value = arg.partition("=")[2] if arg.startswith("-") else arg
        if not value.startswith("file://"):
            continue
        path = Path(unquote(urlparse(value).path))
        directory = path if path.is_dir() else path.parent
        if directory.is_dir() and directory != Path("/") and directory not in found:
            found.append(directory)
    return found


def env_from(container: Obj, read: Callable[[str, str], Obj | None]) -> dict[str, str]:
    """The variables of a container's ``envFrom`` (ConfigMaps and Secrets, with their ``prefix``);
    keys that are not valid variable names are left out, as on a kubelet."""
    env: dict[str, str] = {}
    for index, source in enumerate(container.get("envFrom") or []):
        where = f"container {container.get('name')!r} envFrom[{index}]"
        kinds = [k for k in ("configMapRef", "secretRef") if k in source]
        unknown = sorted(set(source) - {"configMapRef", "secretRef", "prefix"})
        if len(kinds) != 1 or unknown:
            raise ValueError(f"{where}: needs exactly one of configMapRef, secretRef (got {sorted(source)})")
        ref = source[kinds[0]]
        kind = "ConfigMap" if kinds[0] == "configMapRef" else "Secret"
        obj = read(kind, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                continue
            raise MissingReference(f"{where}: {kind.lower()} {ref.get('name')!r} not found")
        data = dict(obj.get("data") or {})
        for key, value in data.items():
            if kind == "Secret":
                value = base64.b64decode(value).decode()
            name = f"{source.get('prefix', '')}{key}"
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name):
                env[name] = str(value)
    return env


def _security(pod_spec: Obj, container: Obj) -> tuple[Obj, Obj]:
    return dict(pod_spec.get("securityContext") or {}), dict(container.get("securityContext") or {})


def validate(pod_spec: Obj, container: Obj) -> None:
    """A ValueError naming the field the container runtime cannot honour."""
    name = container.get("name")
    pod_sc, sc = _security(pod_spec, container)
    for key in sorted(set(pod_sc) - POD_SECURITY_FIELDS):
        raise ValueError(f"spec.securityContext.{key} is not supported by the local container runtime")
    for key in sorted(set(sc) - CONTAINER_SECURITY_FIELDS):
        raise ValueError(
            f"container {name!r}: securityContext.{key} is not supported by the local container runtime"
        )
    for where, context in (("spec.securityContext", pod_sc), (f"container {name!r}: securityContext", sc)):
        profile = (context.get("seccompProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Unconfined"):
            raise ValueError(
                f"{where}.seccompProfile.type {profile!r} is not supported (RuntimeDefault, Unconfined)"
            )
    capabilities = sc.get("capabilities") or {}
    for key in sorted(set(capabilities) - {"add", "drop"}):
        raise ValueError(f"container {name!r}: securityContext.capabilities.{key} is not a field")
    for key in ("lifecycle", "stdin", "tty"):
        if container.get(key):
            raise ValueError(f"container {name!r}: {key} is not supported by the local container runtime")
    if not container.get("image"):
        raise ValueError(f"container {name!r}: image is required")
    resources = container.get("resources") or {}
    for key in sorted(set(resources) - {"limits", "requests"}):
        raise ValueError(
            f"container {name!r}: resources.{key} is not supported by the local container runtime"
        )
    for kind in ("limits", "requests"):
        for resource, quantity in sorted((resources.get(kind) or {}).items()):
            if resource not in ("cpu", "memory"):
                raise ValueError(
                    f"container {name!r}: resources.{kind}.{resource} is not supported by the local "
                    "container runtime (cpu, memory)"
                )
            try:
                parse_quantity(quantity)
            except ValueError:
                raise ValueError(
                    f"container {name!r}: resources.{kind}.{resource}: {quantity!r} is not a quantity"
                ) from None


def resource_flags(container: Obj) -> list[str]:
    """The ``podman run`` flags of a container's ``resources`` (see the module docstring)."""
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    flags: list[str] = []
    if "memory" in limits:
        memory = int(parse_quantity(limits["memory"]))
        flags += [f"--memory={memory}", f"--memory-swap={memory}"]
    if "cpu" in limits:
        flags.append(f"--cpus={float(parse_quantity(limits['cpu'])):g}")
    if "cpu" in requests:
        flags.append(f"--cpu-shares={max(2, int(parse_quantity(requests['cpu']) * 1024))}")
    return flags


@dataclass
class PodmanRuntime:
    """Runs the containers of the process kubelet's pods with podman (see the module docstring)."""

    workdir: Path
    kubeconfig: str | None = None
    podman: Podman = field(default_factory=lambda: Podman(find_podman() or "podman"))
    _users: dict[str, str] = field(default_factory=dict)
    _controllers: frozenset[str] | None = None

    @property
    def label(self) -> str:
        return hashlib.sha256(str(self.workdir.resolve()).encode()).hexdigest()[:12]

    # -------------------------------------------------------------------- life of the runtime
    def check(self) -> None:
        """A RuntimeError with the install hint when podman cannot be used."""
        if find_podman() is None:
            raise RuntimeError(f"the podman runtime needs podman on PATH: {INSTALL_HINT}")

    def clean_up(self) -> None:
        """Remove every container of this kubelet (a previous run's that outlived it, or this one's)."""
        listed = self.podman("ps", "-aq", "--filter", f"label={LABEL}={self.label}", check=False)
        ids = listed.stdout.split()
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids, check=False, timeout=120)

    # ----------------------------------------------------------------------------- pods
    def validate(self, pod_spec: Obj, container: Obj) -> None:
        validate(pod_spec, container)

    def cgroup_controllers(self) -> frozenset[str]:
        """The cgroup controllers podman can use (asked once); a warning when cpu or memory is missing."""
        if self._controllers is None:
            info = self.podman("info", "--format", "{{json .Host.CgroupControllers}}", check=False)
            try:
                self._controllers = frozenset(json.loads(info.stdout or "[]") or [])
            except ValueError:
                self._controllers = frozenset()
            if missing := {"cpu", "memory"} - self._controllers:
                log.warning(
                    "resource limits are not enforced: podman has no %s cgroup controller (%s)",
                    " or ".join(sorted(missing)),
                    info.stderr.strip() or "a rootless engine without cgroup delegation",
                )
        return self._controllers

    def resource_flags(self, container: Obj) -> list[str]:
        flags = resource_flags(container)
        controllers = self.cgroup_controllers() if flags else frozenset()
        return [f for f in flags if ("memory" if f.startswith("--memory") else "cpu") in controllers]

    def image_user(self, image: str) -> str:
        if image not in self._users:
            if not self.podman.image_exists(image):
                raise LookupError(
                    f"image {image!r} is not in the local store (the playground never pulls): "
                    "build it with `make images`"
                )
            self._users[image] = str(self.podman.inspect_image(image)["Config"].get("User") or "")
        return self._users[image]

    def effective_user(self, pod_spec: Obj, container: Obj) -> tuple[str, str | None]:
        """(user, group) the container runs as: securityContext first, then the image's USER."""
        pod_sc, sc = _security(pod_spec, container)
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if uid is None:
            image_user = self.image_user(container["image"])
            user, _, image_group = image_user.partition(":")
            return user or "0", (str(gid) if gid is not None else image_group or None)
        return str(uid), str(gid) if gid is not None else None

    def prepare(self, pod: Any, pod_spec: Obj, read: Callable[[str, str], Obj | None]) -> None:
        """Check every container can run (image present, runAsNonRoot), add ``envFrom`` to the
        environments and give the volumes the ownership a kubelet gives them. Raises
        MissingReference (the pod waits), LookupError or ValueError naming the problem.
        ``read(kind, name)``: a ConfigMap or Secret of the pod's namespace."""
        for container in pod.containers:
            container.env = {**env_from(container.spec, read), **container.env}
            user, _ = self.effective_user(pod_spec, container.spec)
            pod_sc, sc = _security(pod_spec, container.spec)
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                if not user.isdigit():
                    raise ValueError(
                        f"container {container.name!r}: runAsNonRoot is set and the image's user {user!r} "
                        "is not numeric (cannot verify it is not root)"
                    )
                if int(user) == 0:
                    raise ValueError(
                        f"container {container.name!r}: runAsNonRoot is set and the image runs as root"
                    )
        if pod.volumes is None:
            return
        fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
        for name, spec in pod.volumes.specs.items():
            path = pod.volumes.path_of(name)
            if "emptyDir" in spec:
                path.chmod(0o777)
            elif ("secret" in spec or "configMap" in spec) and fs_group is not None:
                for item in [path, *path.rglob("*")]:
                    os.chown(item, -1, int(fs_group))
                    mode = item.stat().st_mode
                    if item.is_file() and mode & 0o400:
                        item.chmod((mode & 0o7777) | 0o040)
        if self.kubeconfig and pod_spec.get("automountServiceAccountToken", True) is not False:
            self._write_kubeconfig(pod, pod_spec)

    def _write_kubeconfig(self, pod: Any, pod_spec: Obj) -> None:
        """The emulator's kubeconfig with the user of the pod's ServiceAccount."""
        assert self.kubeconfig is not None
        config = yaml.safe_load(Path(self.kubeconfig).read_text())
        account = pod_spec.get("serviceAccountName") or "default"
        user = f"system:serviceaccount:{pod.namespace}:{account}"
        for entry in config.get("users") or []:
            entry["name"] = user
            # the emulator authenticates nobody; the token names the account so its audit log says who
            # called (a real API server would verify a projected service-account token instead)
            entry["user"] = {"token": user}
        for entry in config.get("contexts") or []:
            entry["context"]["user"] = user
            entry["context"]["namespace"] = pod.namespace
        path = pod.workdir / "kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o644)

    def container_name(self, pod: Any, container: Any) -> str:
        return f"mlr-{self.label[:6]}-{pod.name}-{container.name}-{container.restarts}"[:250]

    def command(
        self, kubelet: Any, pod: Any, pod_spec: Obj, container: Any
    ) -> tuple[list[str], dict[str, str]]:
        """The ``podman run`` argv of one container and the environment of that command."""
        spec = container.spec
        pod_sc, sc = _security(pod_spec, spec)
        env = engine_environment()
        argv = [
            self.podman.binary,
            "run",
            "--rm",
            "--name",
            self.container_name(pod, container),
            "--label",
            f"{LABEL}={self.label}",
            "--network=host",
            "--hostname",
            pod.name[:63],
            "--pull=never",
            "--http-proxy=false",
        ]
        user, group = self.effective_user(pod_spec, spec)
        argv += ["--user", f"{user}:{group}" if group else user]
        for extra in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])]:
            if extra is not None:
                argv += ["--group-add", str(extra)]
        if sc.get("readOnlyRootFilesystem"):
            argv += ["--read-only", "--read-only-tmpfs=false"]
        capabilities = sc.get("capabilities") or {}
        for cap in capabilities.get("drop") or []:
            argv += ["--cap-drop", str(cap).lower()]
        for cap in capabilities.get("add") or []:
            argv += ["--cap-add", str(cap).lower()]
        if sc.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        if sc.get("privileged"):
            argv.append("--privileged")
        profile = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if profile == "Unconfined":
            argv += ["--security-opt", "seccomp=unconfined"]
        argv += self.resource_flags(spec)
        if spec.get("workingDir"):
            argv += ["--workdir", str(spec["workingDir"])]
        readonly = {
            str(m.get("mountPath", "")).rstrip("/") or "/": bool(m.get("readOnly"))
            for m in spec.get("volumeMounts") or []
        }
        sources = {
            str(m.get("mountPath", "")).rstrip("/") or "/": m.get("name")
            for m in spec.get("volumeMounts") or []
        }
        for mount_path, local in container.mounts.items():
            volume = (pod.volumes.specs.get(sources.get(mount_path)) if pod.volumes else None) or {}
            ro = readonly.get(mount_path) or "secret" in volume or "configMap" in volume
            argv += ["--volume", f"{local}:{mount_path}{':ro' if ro else ''}"]
        kubeconfig = pod.workdir / "kubeconfig"
        if kubeconfig.exists():
            argv += ["--volume", f"{kubeconfig}:{KUBECONFIG_PATH}:ro"]
        command = [str(c) for c in spec.get("command") or []]
        args = [str(a) for a in spec.get("args") or []]
        rewritten = rewrite_url_ports(
            kubelet._rewrite_ports(command + args, container.ports), container.ports
        )
        if os.path.basename((command or [""])[0]) == "mlserving" and not any(
            a == "--host" or a.startswith("--host=") for a in rewritten
        ):
            rewritten.append("--host=127.0.0.1")  # the servers' default 0.0.0.0 would expose the playground
        for directory in file_uri_dirs(rewritten):
            if str(directory) not in container.mounts:  # under a volume (/tmp) too: mounted over it
                argv += ["--volume", f"{directory}:{directory}:ro"]
        container_env = dict(container.env)
        if kubeconfig.exists():
            container_env["KUBECONFIG"] = KUBECONFIG_PATH
        else:
            container_env.pop("KUBECONFIG", None)
        for name, value in container_env.items():
            if name in ENGINE_VARIABLES or name in env:
                argv += ["--env", f"{name}={value}"]
            else:
                env[name] = value
                argv += ["--env", name]
        if command:
            argv += ["--entrypoint", json.dumps(rewritten[: len(command)])]
        argv += [spec["image"], *rewritten[len(command) :]]
        return argv, env

    def start(
        self, kubelet: Any, pod: Any, pod_spec: Obj, container: Any, logfile: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        argv, env = self.command(kubelet, pod, pod_spec, container)
        # the container's ports were allocated by the kubelet; podman attaches and relays signals
        return subprocess.Popen(
            argv,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=pod.workdir,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )

    def signal(self, pod: Any, container: Any, sig: int) -> None:
        """SIGTERM and other catchable signals reach the container through ``podman run`` (it relays
        them); SIGKILL cannot be relayed, so the container itself is killed."""
        popen = container.popen
        if popen is None or popen.poll() is not None:
            return
        if sig != signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(sig)
            return
        killed = self.podman(
            "kill", "--signal", "KILL", self.container_name(pod, container), check=False, timeout=30
        )
        if killed.returncode != 0:  # not created yet, or already gone: end the podman process
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
