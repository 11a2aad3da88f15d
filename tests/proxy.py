"""Debian's nginx, run as the current user on loopback ports, with the files of deploy/nginx/.

`render` copies deploy/nginx/ into a folder and changes only what a test must: the replicas'
addresses (Docker's DNS is not here), the ports (no port under 1024), the certificate's paths and
where nginx writes its pid and logs. Each change names the text it replaces, and a text that is no
longer in the file fails the test: a change to the deployment files cannot pass by going unseen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.server import free_port

NGINX = Path("/usr/sbin/nginx")
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nginx"
SITES = ("http", "https")


def replaced(text: str, changes: dict[str, str], *, name: str) -> str:
    """`text` with each key replaced by its value; an AssertionError for a key not found."""
    for old, new in changes.items():
        assert old in text, f"deploy/nginx/{name} no longer holds {old!r}: update tests/proxy.py"
        text = text.replace(old, new)
    return text


def upstream_for(servers: Sequence[str]) -> str:
    """The compose upstream with the replicas' loopback addresses instead of Docker's DNS name."""
    text = (DEPLOY / "upstream.conf").read_text(encoding="utf-8")
    lines = "\n".join(f"    server {address} max_fails=1 fail_timeout=5s;" for address in servers)
    text = replaced(
        text,
        {
            "resolver 127.0.0.11 valid=10s ipv6=off;\n": "",
            "resolver_timeout 2s;\n": "",
            "    server web:8000 resolve max_fails=1 fail_timeout=5s;": lines,
        },
        name="upstream.conf",
    )
    return text


@dataclass
class Rendered:
    conf: Path  # the main file, for `nginx -p prefix -c conf`
    prefix: Path
    access_log: Path
    error_log: Path


def render(
    folder: Path,
    *,
    servers: Sequence[str],
    site: str = "https",
    http_port: int = 0,
    https_port: int = 0,
    cert: Path | None = None,
    key: Path | None = None,
) -> Rendered:
    """deploy/nginx/ in `folder`, with the replicas at `servers` (host:port) and the site's ports."""
    assert site in SITES
    prefix = folder / "nginx"
    conf_dir = prefix / "conf"
    shutil.copytree(DEPLOY, conf_dir / "kengele")
    (conf_dir / "kengele" / "upstream.conf").write_text(upstream_for(servers), encoding="utf-8")
    access_log, error_log = prefix / "access.log", prefix / "error.log"
    main = replaced(
        (DEPLOY / "nginx.conf").read_text(encoding="utf-8"),
        {
            "pid /run/nginx.pid;": f"pid {prefix / 'nginx.pid'};",
            "error_log /dev/stderr warn;": f"error_log {error_log} warn;",
        },
        name="nginx.conf",
    )
    if os.geteuid() == 0:  # root's workers would run as nobody, who cannot enter a private tmp_path
        main = "user root;\n" + main
    (conf_dir / "nginx.conf").write_text(main, encoding="utf-8")
    proxy = replaced(
        (DEPLOY / "proxy.conf").read_text(encoding="utf-8"),
        {"access_log /dev/stdout kengele;": f"access_log {access_log} kengele;"},
        name="proxy.conf",
    )
    (conf_dir / "kengele" / "proxy.conf").write_text(proxy, encoding="utf-8")
    changes = {"listen 80;": f"listen 127.0.0.1:{http_port or free_port()};"}
    if site == "https":
        assert cert is not None and key is not None
        changes |= {
            "listen 443 ssl;": f"listen 127.0.0.1:{https_port or free_port()} ssl;",
            "/etc/nginx/certs/fullchain.pem": str(cert),
            "/etc/nginx/certs/privkey.pem": str(key),
        }
    text = replaced((DEPLOY / f"{site}.conf").read_text(encoding="utf-8"), changes, name=f"{site}.conf")
    (conf_dir / "site.conf").write_text(text, encoding="utf-8")
    return Rendered(conf=conf_dir / "nginx.conf", prefix=prefix, access_log=access_log, error_log=error_log)


def self_signed(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for `host` (and 127.0.0.1) and its key, as PEM files: the proxy's, in a test."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def check(rendered: Rendered) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the rendered files: exit 0 and "syntax is ok", or what nginx says is wrong."""
    return subprocess.run(
        [str(NGINX), "-t", "-q", "-p", str(rendered.prefix), "-c", str(rendered.conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


class Nginx:
    """nginx in the foreground (`daemon off`), started on the rendered files and stopped by its pid."""

    def __init__(self, rendered: Rendered) -> None:
        self.rendered = rendered
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, health_url: str, timeout: float = 10.0) -> Nginx:
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(self.rendered.prefix), "-c", str(self.rendered.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.errors()}")
            try:
                if httpx.get(health_url, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx not answering in time: {self.errors()}")

    def errors(self) -> str:
        path = self.rendered.error_log
        return path.read_text(encoding="utf-8")[-2000:] if path.exists() else ""

    def access_lines(self) -> list[str]:
        path = self.rendered.access_log
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
