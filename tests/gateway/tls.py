"""A throwaway CA and a TLS-terminating relay in front of the workers' private ports.

The server speaks plaintext gRPC; the relay (Envoy, TCP proxy per worker) lets the
tests and the benchmark exercise the gateway's TLS-to-workers option end to end.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SERVER_NAME", "relay_config", "write_certificates"]

SERVER_NAME = "worker.pronto.internal"
DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def write_certificates(
    folder: Path, names: Sequence[str] = (SERVER_NAME,), addresses: Sequence[str] = ()
) -> dict[str, Path]:
    """CA certificate plus a server certificate for DNS ``names`` and IP ``addresses``
    (PEM files ``ca``, ``cert`` and ``key``)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("pronto test CA"))
        .issuer_name(_name("pronto test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def relay_config(
    worker_base: int, relay_base: int, workers: int, certs: dict[str, Path], tls: bool
) -> str:
    """Envoy config: relay_base+i (TLS when ``tls``) -> 127.0.0.1:worker_base+i."""
    listeners, clusters = [], []
    for i in range(workers):
        socket = ""
        if tls:
            socket = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {DOWNSTREAM_TLS}
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
            - certificate_chain: {{filename: "{certs["cert"]}"}}
              private_key: {{filename: "{certs["key"]}"}}"""
        listeners.append(f"""
  - name: relay-{i}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {relay_base + i}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: relay
          cluster: worker-{i}{socket}""")
        clusters.append(f"""
  - name: worker-{i}
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: worker-{i}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {worker_base + i}}}}}""")
    return (
        "static_resources:\n  listeners:"
        + "".join(listeners)
        + "\n  clusters:"
        + "".join(clusters)
        + "\n"
    )
