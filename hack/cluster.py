"""Local Kubernetes control plane: etcd + kube-apiserver on loopback, built from pinned Go modules.

Used three ways:
  * ``python -m hack.cluster up|down|status`` (what ``make cluster-up`` / ``make cluster-down`` run):
    processes detached in the background, state in ``.local/cluster``, kubeconfig in
    ``.local/kubeconfig``; ``up`` is idempotent.
  * The pytest session fixture (``tests/conftest.py``): processes are children of pytest and die
    with it, state in a temporary directory.
  * ``make demo``.

Everything listens on 127.0.0.1 only, on free ports, with TLS; the API server has the RBAC authorizer
on and an admin identity (client certificate in group ``system:masters``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parent.parent
HACK_DIR = REPO_ROOT / "hack"
CRDS_DIR = REPO_ROOT / "crds"
DEFAULT_STATE_DIR = REPO_ROOT / ".local" / "cluster"
DEFAULT_KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
SERVICE_CIDR = "10.0.0.0/24"


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or reached."""


@dataclass
class ClusterInfo:
    """What a running local control plane looks like; saved as ``cluster.json`` in its state dir."""

    state_dir: str
    kubeconfig: str
    server: str
    kube_bin_dir: str
    etcd_pid: int
    apiserver_pid: int
    #: The API server's audit log: one JSON line per write (who, what, answer), none for reads.
    audit_log: str = ""

    @property
    def kubectl(self) -> str:
        return str(Path(self.kube_bin_dir) / "kubectl")

    def save(self) -> None:
        (Path(self.state_dir) / "cluster.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo | None:
        path = state_dir / "cluster.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- tools


def build_tools(*names: str) -> dict[str, Path]:
    """Build (or find in the cache) the named tools; returns tool name -> bin dir."""
    cmd = [str(HACK_DIR / "build-tools.sh"), *names]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            f"building {', '.join(names)} failed: `{' '.join(cmd)}` exited {proc.returncode} "
            "(the lines above name the Go module and command)"
        )
    dirs = [Path(line) for line in proc.stdout.split()]
    return dict(zip(names, dirs, strict=True))


# --------------------------------------------------------------------------------------------- PKI


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                ]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(pki: Path) -> None:
    """CA, API server serving cert, admin client cert (system:masters), service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-provisioner-local-ca")])
    ca_cert = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki / "ca.key", ca_key)

    for stem, subject, server in (
        ("apiserver", [x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")], True),
        (
            "admin",
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "local-admin"),
            ],
            False,
        ),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(x509.Name(subject), key, ca_name, ca_key, server=server)
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pki / f"{stem}.key", key)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": "local-admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local-admin"}}],
        "current-context": "local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent() -> None:
    # PR_SET_PDEATHSIG: SIGTERM the child when the process that started it exits (pytest killed etc.).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def _spawn(cmd: Sequence[str], logfile: Path, *, detach: bool) -> subprocess.Popen[bytes]:
    out = logfile.open("ab")
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if detach else die_with_parent,
        )
    finally:
        out.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); check its state.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _wait_until(
    what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], logfile: Path
) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
            raise ClusterError(f"{what} exited with code {proc.returncode}; last log lines:\n{tail}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError) as e:
            last_error = str(e)
        time.sleep(0.2)
    raise ClusterError(f"{what} not ready after {timeout:.0f}s (last error: {last_error}); log: {logfile}")


def _apiserver_ready(server: str, pki: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def _etcd_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except urllib.error.HTTPError:
        return False


def kubectl(
    kubectl_path: str, kubeconfig: str, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_path, "--kubeconfig", kubeconfig, *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def install_crds(kubectl_path: str, kubeconfig: str) -> None:
    """Apply every CRD in ``crds/`` (server-side, so it is idempotent) and wait until Established."""
    files = sorted(CRDS_DIR.glob("*.yaml"))
    if not files:
        return
    args = ["apply", "--server-side", "--force-conflicts"]
    for f in files:
        args += ["-f", str(f)]
    res = kubectl(kubectl_path, kubeconfig, *args)
    if res.returncode != 0:
        raise ClusterError(f"installing CRDs failed: {res.stderr.strip()}")
    res = kubectl(
        kubectl_path, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"
    )
    if res.returncode != 0:
        raise ClusterError(f"CRDs did not become Established: {res.stderr.strip()}")


#: Writes only, at Metadata level (user, user agent, verb, object, answer code), once answered.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"""


def start(state_dir: Path, kubeconfig: Path, *, detach: bool) -> ClusterInfo:
    """Start etcd and kube-apiserver; return once the API server is ready and CRDs are installed."""
    tools = build_tools("kubernetes", "etcd")
    kube_bin, etcd_bin = tools["kubernetes"], tools["etcd"]
    if state_dir.exists():
        shutil.rmtree(state_dir)
    pki = state_dir / "pki"
    make_pki(pki)
    logs = state_dir / "logs"
    logs.mkdir(parents=True)

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log = logs / "etcd.log"
    etcd = _spawn(
        [
            str(etcd_bin / "etcd"),
            "--name=local",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=local=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",  # throw-away test data; fsync dominates latency on small disks
            "--log-level=warn",
        ],
        etcd_log,
        detach=detach,
    )
    try:
        _wait_until("etcd", lambda: _etcd_ready(etcd_url), 60, etcd, etcd_log)
        server = f"https://127.0.0.1:{api_port}"
        api_log = logs / "kube-apiserver.log"
        audit_log = logs / "audit.log"
        audit_policy = state_dir / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        apiserver = _spawn(
            [
                str(kube_bin / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={state_dir / 'certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # No controller-manager runs here, so nothing creates namespaces' default
                # ServiceAccount; pods must still be creatable for drain tests.
                "--disable-admission-plugins=ServiceAccount",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=200",  # MB, then rotated once: bounded on a long run
                "--audit-log-maxbackup=1",
                "--v=0",
            ],
            api_log,
            detach=detach,
        )
        info = ClusterInfo(
            state_dir=str(state_dir),
            kubeconfig=str(kubeconfig),
            server=server,
            kube_bin_dir=str(kube_bin),
            etcd_pid=etcd.pid,
            apiserver_pid=apiserver.pid,
            audit_log=str(audit_log),
        )
        info.save()
        _wait_until("kube-apiserver", lambda: _apiserver_ready(server, pki), 120, apiserver, api_log)
        write_kubeconfig(kubeconfig, server, pki)
        install_crds(info.kubectl, info.kubeconfig)
        return info
    except BaseException:
        stop(state_dir, remove=False)  # keep the logs named in the error
        raise


def stop(state_dir: Path, *, remove: bool = True) -> bool:
    """Stop the processes recorded in ``state_dir`` (by pid) and remove the state. True if any ran."""
    info = ClusterInfo.load(state_dir)
    ran = False
    if info is not None:
        for pid in (info.apiserver_pid, info.etcd_pid):
            ran |= alive(pid)
            stop_pid(pid)
    if remove and state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
    return ran


def running(state_dir: Path) -> ClusterInfo | None:
    info = ClusterInfo.load(state_dir)
    if info is None or not (alive(info.etcd_pid) and alive(info.apiserver_pid)):
        return None
    try:
        if _apiserver_ready(info.server, state_dir / "pki"):
            return info
    except (OSError, urllib.error.URLError, ssl.SSLError):
        pass
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--kubeconfig", type=Path, default=DEFAULT_KUBECONFIG)
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    kubeconfig: Path = args.kubeconfig.resolve()

    if args.command == "up":
        info = running(state_dir)
        if info is not None:
            install_crds(info.kubectl, info.kubeconfig)  # idempotent; picks up CRD changes
            log(f"already running at {info.server}")
        else:
            stop(state_dir)  # clean up a half-dead previous run
            log("starting etcd and kube-apiserver on 127.0.0.1 ...")
            info = start(state_dir, kubeconfig, detach=True)
            log(
                f"kube-apiserver ready at {info.server} (pids etcd={info.etcd_pid} apiserver={info.apiserver_pid})"
            )
        print(f"export KUBECONFIG={info.kubeconfig}")
        print(f"# kubectl: {info.kubectl}")
        return 0
    if args.command == "down":
        if stop(state_dir):
            log("stopped")
        else:
            log("nothing running")
        with contextlib.suppress(FileNotFoundError):
            kubeconfig.unlink()
        return 0
    info = running(state_dir)
    if info is None:
        print("not running")
        return 1
    print(f"running at {info.server}; KUBECONFIG={info.kubeconfig}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClusterError as e:
        log(f"ERROR: {e}")
        sys.exit(1)
