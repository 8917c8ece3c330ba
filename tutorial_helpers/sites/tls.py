"""Mutual TLS between the controller and the sites: a workshop's certificate authority, and gRPC credentials.

A site's gatekeeper (`tutorial_helpers.sites.gatekeeper`) decides what runs on the
site's data, but on a network anyone who reaches its port could talk to it,
and the controller could be talking to anyone who answers at the site's
address. With mutual TLS both ends prove who they are with a certificate
signed by an authority both trust: the site serves only the controller, the
controller talks only to the site it meant to reach. gRPC does the TLS
(`grpc.ssl_server_credentials`, `grpc.ssl_channel_credentials`); this module
makes the certificates and loads them.

``python -m tutorial_helpers.tls make FOLDER clinic hospital practice`` makes a
small certificate authority (CA) for a workshop, and a certificate for the
controller and for each site, one folder per holder::

    FOLDER/ca/          ca.pem, ca.key: the authority; its key stays with whoever made it
    FOLDER/controller/  ca.pem, cert.pem, key.pem: goes to the controller's machine
    FOLDER/clinic/      ca.pem, cert.pem, key.pem: goes to the clinic's machine (and so on)

A site's certificate carries the site's name (the name the controller
checks, whatever address it connects to) and any host names or IP addresses
given with ``--address clinic=10.0.0.2``; the controller's carries the name
``controller``, which each gatekeeper checks, so a site's certificate does
not open another site. Keys are ECDSA P-256, certificates valid 30 days.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CA_FOLDER", "CONTROLLER", "Identity", "make_workshop_ca", "peer_name"]

CONTROLLER = "controller"
CA_FOLDER = "ca"
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} cannot name a site in a certificate: use lowercase letters, digits and "
                         "hyphens (not at either end), at most 63 characters, as in a host name: 'clinic', 'site-2'.")
    return name


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_workshop_ca(folder: str | os.PathLike, sites: Sequence[str], *,
                     addresses: Mapping[str, Sequence[str]] | None = None, days: int = 30) -> Path:
    """Makes a certificate authority and certificates for the controller and each of `sites` in `folder`.

    `addresses` adds host names or IP addresses to a site's certificate (the
    controller checks the site's name either way). `folder` must not hold a
    workshop CA yet: nothing is overwritten. Returns `folder`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    sites = [_check_name(site) for site in sites]
    if not sites:
        raise ValueError("make_workshop_ca needs at least one site name.")
    if len(set(sites)) != len(sites) or CONTROLLER in sites or CA_FOLDER in sites:
        raise ValueError(f"Site names must differ from each other and from {CONTROLLER!r} and {CA_FOLDER!r}: "
                         f"got {sites}.")
    addresses = dict(addresses or {})
    if set(addresses) - set(sites):
        raise ValueError(f"addresses names sites that are not among {sites}: {sorted(set(addresses) - set(sites))}.")
    for site, given in addresses.items():
        for address in given:
            if address in (CONTROLLER, *sites) or "*" in address or not address.strip():
                raise ValueError(f"address {address!r} for site {site!r}: give a host name or IP address of "
                                 "its own, not a holder's name or a wildcard (the certificate would then pass "
                                 "for that name).")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}.")
    if (folder / CA_FOLDER).exists():
        raise FileExistsError(f"{folder / CA_FOLDER} already exists: a workshop CA was made there. Use another "
                              "folder, or remove that one first (its certificates stop working).")
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # Clocks differ a little.
    until = now + datetime.timedelta(days=days)

    def pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"TFF kit workshop CA {now:%Y-%m-%d %H:%M}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CA_FOLDER).mkdir(mode=0o700)
    _write(folder / CA_FOLDER / "ca.pem", ca_pem, 0o644)
    _write(folder / CA_FOLDER / "ca.key", pem(ca_key), 0o600)

    for name in [CONTROLLER, *sites]:
        key = ec.generate_private_key(ec.SECP256R1())
        alternative: list[x509.GeneralName] = [x509.DNSName(name)]
        for address in addresses.get(name, ()):
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                alternative.append(x509.DNSName(address))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if name == CONTROLLER else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(until)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (folder / name).mkdir(mode=0o700)
        _write(folder / name / "ca.pem", ca_pem, 0o644)
        _write(folder / name / "cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(folder / name / "key.pem", pem(key), 0o600)
    return folder


@dataclasses.dataclass(frozen=True)
class Identity:
    """One holder's certificate and key, and the authority it trusts: a folder `make_workshop_ca` made."""

    folder: Path

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))
        missing = [name for name in ("ca.pem", "cert.pem", "key.pem") if not (self.folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder} has no {', '.join(missing)}: give the folder that "
                                    "`python -m tutorial_helpers.tls make` made for this controller or site.")

    def _read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def server_credentials(self):
        """A site's: serves with its certificate and accepts only clients with one from the same authority."""
        import grpc

        return grpc.ssl_server_credentials([(self._read("key.pem"), self._read("cert.pem"))],
                                           root_certificates=self._read("ca.pem"), require_client_auth=True)

    def channel_credentials(self):
        """The controller's: presents its certificate and trusts only servers with one from the same authority."""
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=self._read("ca.pem"),
                                            private_key=self._read("key.pem"),
                                            certificate_chain=self._read("cert.pem"))

    def secure_channel(self, address: str, site: str, options: Sequence[tuple[str, object]] = ()):
        """A channel to `address` that accepts only a certificate naming `site`, from this identity's authority."""
        import grpc

        return grpc.secure_channel(address, self.channel_credentials(),
                                   [*options, ("grpc.ssl_target_name_override", _check_name(site))])


def peer_name(context) -> str | None:
    """The name (common name) in the certificate the peer of a gRPC call presented; None without one."""
    names = context.auth_context().get("x509_common_name") or [None]
    return None if names[0] is None else names[0].decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_helpers.tls", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="a workshop CA, and certificates for the controller and the sites")
    make.add_argument("folder", help="where to write them (one folder per holder)")
    make.add_argument("sites", nargs="+", help="the sites' names: clinic hospital practice")
    make.add_argument("--address", action="append", default=[], metavar="SITE=HOST",
                      help="a host name or IP address the site is reached at (repeatable)")
    make.add_argument("--days", type=int, default=30, help="how long the certificates are valid (default 30)")
    args = parser.parse_args(argv)
    addresses: dict[str, list[str]] = {}
    for given in args.address:
        site, sep, host = given.partition("=")
        if not sep or not host:
            parser.error(f"--address {given!r}: write SITE=HOST, e.g. --address clinic=10.0.0.2")
        addresses.setdefault(site, []).append(host)
    try:
        folder = make_workshop_ca(args.folder, args.sites, addresses=addresses, days=args.days)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Made in {folder}:")
    print(f"  {CA_FOLDER}/          the authority: keep {CA_FOLDER}/ca.key with you, give it to nobody")
    print(f"  {CONTROLLER}/  copy to the controller's machine")
    for site in args.sites:
        print(f"  {site}/{' ' * max(1, 11 - len(site))}copy to the {site}'s machine (site_server --tls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
