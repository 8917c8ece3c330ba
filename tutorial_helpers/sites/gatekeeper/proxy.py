"""The gatekeeper's proxy: a gRPC server that speaks TFF's executor protocol and forwards through the chains.

`Gate` is the servicer: for each call it runs the incoming checks, forwards
the call to the worker, runs the outgoing filters on the answer, and writes
one line to the audit log, whatever the outcome. `ControllerOnly` is the
authentication, a gRPC server interceptor in front of the servicer (as
Flower's SuperLink authenticates its nodes): with mutual TLS, only the client
whose certificate names the controller gets through.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from tutorial_helpers.runtime.workers import GRPC_OPTIONS
from tutorial_helpers.sites.gatekeeper.audit_log import AuditLog
from tutorial_helpers.sites.gatekeeper.checks import (
    SERVICE,
    ApprovedComputations,
    Call,
    DistinctClients,
    IncomingCheck,
    MinimumCohort,
    NoDatasetsFromOutside,
    OutgoingFilter,
    PinnedValues,
    Refused,
    RememberValues,
    ResultCap,
    ReviewedMethodsOnly,
    TrustNeedsTls,
    Unauthenticated,
    executor_methods,
)
from tutorial_helpers.sites.gatekeeper.fingerprints import Fingerprints
from tutorial_helpers.sites.gatekeeper.ledger import ValueLedger
from tutorial_helpers.sites.gatekeeper.policy import Policy
from tutorial_helpers.sites.gatekeeper.release import PrivacyBudget, SiteNoise

__all__ = ["ControllerOnly", "Gate", "standard_chains"]


def standard_chains(policy: Policy, max_result_bytes: int | None = None, tls: bool = True
                    ) -> tuple[list[IncomingCheck], list[OutgoingFilter]]:
    """The kit's chains for a site: (incoming checks, outgoing filters), in the order they run.

    In: only reviewed calls, no datasets from outside, no client counted
    twice, only approved computations, pinned values as pinned. Out: the site's minimum number
    of clients, its noise (`release.SiteNoise`) and its privacy budget
    (`release.PrivacyBudget`) if its limits set them, the result cap (if
    any), then the ledger that the other checks and filters read. Without
    `tls`, first: no call while the site trusts one controller certificate.
    """
    fingerprints = Fingerprints()
    ledger = ValueLedger(lambda computation: fingerprints.form(computation)[0])
    incoming = [*([] if tls else [TrustNeedsTls(policy)]), ReviewedMethodsOnly(), NoDatasetsFromOutside(),
                DistinctClients(ledger), ApprovedComputations(policy, fingerprints), PinnedValues(policy, ledger)]
    outgoing = [MinimumCohort(policy, ledger), SiteNoise(policy, ledger), PrivacyBudget(policy),
                *([] if max_result_bytes is None else [ResultCap(max_result_bytes)]), RememberValues(ledger)]
    return incoming, outgoing


class Gate:
    """Checks and forwards each executor call to the worker at `worker` (host:port); one per gatekeeper.

    `handle` is the whole servicer: incoming checks, the worker, outgoing
    filters, one log line. A `Refused` stops the call with
    PERMISSION_DENIED (UNAUTHENTICATED for `Unauthenticated`); an error of
    the worker is passed on with its code; a request that does not parse is
    refused with INVALID_ARGUMENT. Every outcome is logged.
    """

    def __init__(self, site: str, log: AuditLog, worker: str, incoming: Sequence[IncomingCheck],
                 outgoing: Sequence[OutgoingFilter]):
        self.site = site
        self.log = log
        self.incoming = list(incoming)
        self.outgoing = list(outgoing)
        self._channel = grpc.insecure_channel(worker, GRPC_OPTIONS)
        self._forward = {method: self._channel.unary_unary(f"/{SERVICE}/{method}") for method in executor_methods()}

    def handle(self, method: str, request: bytes, context) -> bytes:
        call = Call(self.site, method, request)
        try:
            for check in self.incoming:
                check.check(call)
            if not context.is_active():  # The controller gave up (its deadline passed) while this call waited.
                raise Refused(f"Site {self.site!r} did not forward a {method} its controller no longer waits for.")
            # No longer than the controller waits: a frozen worker must not hold the gatekeeper's threads.
            # (Without a deadline, gRPC gives the time remaining as infinite, or about 2**63 ns.)
            remaining = context.time_remaining()
            answer = self._forward[method](
                request, timeout=remaining if remaining is not None and remaining < 1e7 else None)
            for outgoing in self.outgoing:
                answer = outgoing.filter(call, answer)
        except Refused as e:
            self.log.write(f"{method} in={len(request)} out=0 verdict=refused -- {e}")
            code = (grpc.StatusCode.UNAUTHENTICATED if isinstance(e, Unauthenticated)
                    else grpc.StatusCode.PERMISSION_DENIED)
            context.abort(code, str(e))
        except grpc.RpcError as e:
            self.log.write(f"{method} in={len(request)} out=0 verdict=error code={e.code().name} -- "
                           f"{(e.details() or '')[:200]}")
            context.abort(e.code(), e.details() or "")
        except Exception as e:  # A request the gatekeeper cannot read, a policy that does not read: refused.
            message = f"Site {self.site!r} refused a request it could not check: {type(e).__name__}: {e}"
            self.log.write(f"{method} in={len(request)} out=0 verdict=refused -- {message}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        self.log.write(f"{method} in={len(request)} out={len(answer)} verdict=forwarded"
                       + (f" -- {' '.join(call.notes)}" if call.notes else ""))
        return answer

    def handler(self) -> grpc.GenericRpcHandler:
        """The gRPC handler of every call of TFF's executor service (as TFF's own descriptor lists them)."""

        def method_handler(method):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: self.handle(method, request, context))

        return grpc.method_handlers_generic_handler(SERVICE, {m: method_handler(m) for m in executor_methods()})

    def close(self) -> None:
        self._channel.close()


class ControllerOnly(grpc.ServerInterceptor):
    """Authentication: serves only the client whose certificate (mutual TLS) names `controller`.

    gRPC's TLS has already checked that the certificate comes from the
    site's authority; this checks *whose* it is, so that another site's
    certificate from the same authority does not open this site. With a
    `policy` whose folder has `trusted_controller.txt`, only that one
    certificate gets in: whoever holds the authority's key can make more
    certificates naming the controller. A call
    from anyone else is refused with UNAUTHENTICATED and logged, before any
    check or the worker sees it.
    """

    def __init__(self, site: str, controller: str, log: AuditLog, policy: Policy | None = None):
        self.site = site
        self.controller = controller
        self.log = log
        self.policy = policy

    def _untrusted(self, context) -> str | None:
        """Why a certificate that names the controller is not served: not the one the site trusts; None if it is."""
        try:
            trusted = None if self.policy is None else self.policy.current().controller
        except ValueError as e:
            return f"Site {self.site!r} refused: {e}."
        if trusted is None:
            return None
        from tutorial_helpers.sites.gatekeeper.policy import TRUSTED_CONTROLLER, certificate_fingerprint

        pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
        if pem and certificate_fingerprint(pem) == trusted:
            return None
        return (f"Site {self.site!r} serves only the controller certificate it trusts ({TRUSTED_CONTROLLER}); this "
                f"one names {self.controller!r} but is another (the workshop's authority can make any number).")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def authenticated(request, context):
            from tutorial_helpers.sites.tls import peer_name

            peer = peer_name(context)
            message = (f"Site {self.site!r} serves only the controller: the client's certificate names {peer!r}, "
                       f"not {self.controller!r}." if peer != self.controller else self._untrusted(context))
            if message is not None:
                self.log.write(f"{method} in={len(request)} out=0 verdict=refused -- {message}")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(authenticated, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
