"""Mutual TLS between the controller and the sites' gatekeepers: who is served, who is refused."""

import datetime
import ipaddress
import stat
import subprocess
import sys

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import worker_pids
from tests.test_gatekeeper import gatekeepers, sites  # noqa: F401  (sites is a fixture)
from tests.test_sites import train
from tutorial_helpers.sites import build_site_fed_avg, create_site_context
from tutorial_helpers.sites.gatekeeper import Gatekeeper, read_audit_log
from tutorial_helpers.sites.tls import Identity, make_workshop_ca
from tutorial_helpers.sites.worker import SiteWorker
from tutorial_helpers.worker_process import ping_channel


def make(*args, check=True):
    return subprocess.run([sys.executable, "-m", "tutorial_helpers.tls", "make", *map(str, args)],
                          capture_output=True, text=True, check=check)


def certificate(folder) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())


@pytest.mark.process
def test_the_workshop_ca_command_makes_one_folder_per_holder_and_overwrites_nothing(tmp_path):
    made = make(tmp_path / "ws", "clinic", "hospital", "--address", "clinic=10.77.0.2", "--address",
                "clinic=clinic.example.org")
    assert "keep ca/ca.key with you" in made.stdout
    ws = tmp_path / "ws"
    ca = x509.load_pem_x509_certificate((ws / "ca" / "ca.pem").read_bytes())
    assert stat.S_IMODE((ws / "ca").stat().st_mode) == 0o700
    for holder in ("controller", "clinic", "hospital"):
        assert sorted(p.name for p in (ws / holder).iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
        assert stat.S_IMODE((ws / holder / "key.pem").stat().st_mode) == 0o600
        assert (ws / holder / "ca.pem").read_bytes() == (ws / "ca" / "ca.pem").read_bytes()
        cert = certificate(ws / holder)
        cert.verify_directly_issued_by(ca)  # Raises if another authority signed it.
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == holder
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH if holder == "controller"
                               else ExtendedKeyUsageOID.SERVER_AUTH]
    names = certificate(ws / "clinic").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["clinic", "clinic.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.77.0.2")]
    assert "key.pem" not in {p.name for p in (ws / "ca").iterdir()} and (ws / "ca" / "ca.key").is_file()

    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    again = make(ws, "clinic", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before
    for wrong, message in ((["Clinic"], "lowercase letters"), (["site_2"], "lowercase letters"),
                           (["controller"], "must differ"), (["clinic", "clinic"], "must differ"),
                           (["-clinic"], "lowercase letters")):
        refused = make(tmp_path / "x", "--", *wrong, check=False)
        assert refused.returncode == 2 and message in refused.stderr, wrong
    refused = make(tmp_path / "y", "clinic", "--address", "clinic", check=False)
    assert refused.returncode == 2 and "write SITE=HOST" in refused.stderr
    for wrong in ("hospital", "controller", "*.example.org"):
        with pytest.raises(ValueError, match="not a holder's name or a wildcard"):
            make_workshop_ca(tmp_path / "w", ["clinic", "hospital"], addresses={"clinic": [wrong]})
    with pytest.raises(ValueError, match="days must be at least 1, got 0"):
        make_workshop_ca(tmp_path / "w", ["clinic"], days=0)
    with pytest.raises(ValueError, match=r"not among \['clinic'\]: \['hospital'\]"):
        make_workshop_ca(tmp_path / "z", ["clinic"], addresses={"hospital": ["10.0.0.1"]})
    with pytest.raises(FileNotFoundError, match="has no ca.pem, cert.pem, key.pem"):
        Identity(tmp_path)


def client_certificate(ws, name: str, folder):
    """A certificate for clients from the workshop's own authority, naming `name` (not the controller)."""
    ca_key = serialization.load_pem_private_key((ws / "ca" / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((ws / "ca" / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir()
    (folder / "ca.pem").write_bytes((ws / "ca" / "ca.pem").read_bytes())
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return Identity(folder)


def refused(channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        ping_channel(channel, 5)
    channel.close()
    return caught.value


@pytest.mark.process
def test_over_mutual_tls_a_round_trains_as_without_and_only_the_controller_reaches_a_site(sites, tmp_path):  # noqa: F811
    ids, catalogue, roots, folders = sites
    ws = make_workshop_ca(tmp_path / "ws", list(catalogue))
    other = make_workshop_ca(tmp_path / "other", list(catalogue))
    process = build_site_fed_avg()
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders)):
        expected, expected_metrics = train(process, ids)
    start = {site: len(read_audit_log(folder)) for site, folder in folders.items()}
    with create_site_context(roots=roots, gatekeepers=gatekeepers(folders), tls=ws) as ctx:
        assert all(worker.tls == ws / "controller" and worker.gatekeeper.tls == ws / site
                   for site, worker in ctx.sites.items())
        secured, secured_metrics = train(process, ids)
        clinic = ctx.sites["clinic"].address
        pids = [worker.pid for worker in ctx.workers]

        # The positive control: the controller's own certificate, expecting the clinic, is served.
        ping_channel(Identity(ws / "controller").secure_channel(clinic, "clinic"), 5)
        # A controller without TLS, or with a certificate from another authority: no TLS session at all.
        assert "Socket closed" in refused(grpc.insecure_channel(clinic)).details()
        assert "handshake failed" in refused(Identity(other / "controller").secure_channel(clinic, "clinic")).details()
        # TLS from the workshop's authority, but no certificate of the client's own: refused in the handshake.
        anonymous = grpc.secure_channel(clinic, grpc.ssl_channel_credentials((ws / "ca" / "ca.pem").read_bytes()),
                                        [("grpc.ssl_target_name_override", "clinic")])
        assert refused(anonymous).code() == grpc.StatusCode.UNAVAILABLE
        # A site's certificate (issued for serving, not for clients) does not open another site.
        assert refused(Identity(ws / "hospital").secure_channel(clinic, "clinic")).code() == grpc.StatusCode.UNAVAILABLE
        # A client certificate from the same authority that is not the controller's: TLS passes, the gatekeeper
        # refuses, and says so in the site's log.
        intruder = client_certificate(ws, "intruder", tmp_path / "intruder").secure_channel(clinic, "clinic")
        error = refused(intruder)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "serves only the controller: the client's certificate names 'intruder'" in error.details()
        # The controller expecting another site at this address: the clinic's certificate does not name it.
        wrong = refused(Identity(ws / "controller").secure_channel(clinic, "hospital"))
        assert "Hostname Verification Check failed" in wrong.details()
        for site, worker in ctx.sites.items():  # Every gatekeeper the context started speaks TLS only.
            assert "Socket closed" in refused(grpc.insecure_channel(worker.address)).details(), site

    assert not worker_pids() & set(pids)
    for round_secured, round_expected in zip(secured, expected, strict=True):
        for a, b in zip(round_secured, round_expected, strict=True):
            np.testing.assert_array_equal(a, b)
    assert secured_metrics == expected_metrics
    log = read_audit_log(folders["clinic"])[start["clinic"]:]
    assert {call["verdict"] for call in log if call["call"] == "CreateValue"} == {"forwarded"}
    (unauthenticated,) = [call for call in log if call["verdict"] == "refused"]
    assert unauthenticated["call"] == "GetExecutor" and "'intruder'" in unauthenticated["detail"]


@pytest.mark.process
def test_a_site_whose_certificate_the_controller_does_not_trust_is_refused_at_once(sites, tmp_path):  # noqa: F811
    _, _, roots, folders = sites
    ws = make_workshop_ca(tmp_path / "ws", ["clinic"])
    impostor = make_workshop_ca(tmp_path / "impostor", ["clinic"])
    before = set(worker_pids())
    with pytest.raises(ConnectionError, match=r"was not reached over TLS: .*certificate signature failure"):
        SiteWorker(Gatekeeper(folders["clinic"], "clinic", tls=impostor / "clinic"), cwd=roots["clinic"],
                      tls=ws / "controller")
    with pytest.raises(ValueError, match="give both or neither"):
        SiteWorker(Gatekeeper(folders["clinic"], "clinic", tls=ws / "clinic"))
    with pytest.raises(ValueError, match="pass tls= .* too"):
        create_site_context(roots=roots, gatekeepers={s: Gatekeeper(f, tls=ws / "clinic") for s, f in folders.items()})
    with pytest.raises(ValueError, match=r"needs a gatekeeper for every site .*\['hospital', 'practice'\]"):
        create_site_context(roots=roots, gatekeepers={"clinic": Gatekeeper(folders["clinic"])}, tls=ws)
    assert set(worker_pids()) <= before


@pytest.mark.process
def test_a_site_that_trusts_one_controller_certificate_refuses_another_that_names_the_controller(
        sites, tmp_path, capsys):  # noqa: F811
    """The workshop authority's holder can mint a second 'controller' certificate: TLS and the name check let it
    in (the positive control); once the site trusts the controller's own certificate, it is refused and logged."""
    from tutorial_helpers.sites.gatekeeper.serve import main

    _, _, roots, folders = sites
    ws = make_workshop_ca(tmp_path / "ws", ["clinic"])
    folder = tmp_path / "clinic-gatekeeper"
    folder.mkdir()
    (folder / "approved.txt").write_bytes((folders["clinic"] / "approved.txt").read_bytes())
    minted = client_certificate(ws, "controller", tmp_path / "minted")
    with create_site_context(roots={"clinic": roots["clinic"]}, gatekeepers={"clinic": Gatekeeper(folder)},
                             tls=ws) as ctx:
        clinic = ctx.sites["clinic"].address
        ping_channel(minted.secure_channel(clinic, "clinic"), 5)  # Without a trusted certificate: served.
        assert main(["trust", str(folder), str(ws / "controller" / "cert.pem")]) == 0
        assert "serves only the controller certificate with SHA-256" in capsys.readouterr().out
        error = refused(minted.secure_channel(clinic, "clinic"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "serves only the controller certificate it trusts (trusted_controller.txt)" in error.details()
        ping_channel(Identity(ws / "controller").secure_channel(clinic, "clinic"), 5)  # The trusted one: served.
        (folder / "trusted_controller.txt").write_text("not a fingerprint\n")  # Broken: everyone is refused.
        broken = refused(Identity(ws / "controller").secure_channel(clinic, "clinic"))
        assert "must hold one SHA-256" in broken.details()
    assert [c["detail"].split(" (")[0] for c in read_audit_log(folder) if c["verdict"] == "refused"] == [
        "Site 'clinic' serves only the controller certificate it trusts", "Site 'clinic' refused: the site's policy "
        "does not read"]
