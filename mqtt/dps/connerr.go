package dps

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// connectError classifies a failed connection: a CONNACK refusal (rc 1-5),
// or a failure of DNS, TCP or TLS, whose cause is dialErr when the dial
// itself failed and err otherwise.
func connectError(err error, rc byte, dialErr error, method AuthMethod, addr string) *Error {
	switch rc {
	case connackBadCredentials, connackNotAuthorized:
		e := &Error{Kind: KindAuth, Op: OpConnect, connack: rc,
			Message: fmt.Sprintf("DPS refused the connection (CONNACK %d: %s)", rc, connackText(rc))}
		e.hint = authHint(method)
		return e
	case connackBadProtocol, connackIdentifierRejected, connackServerUnavailable:
		return &Error{Kind: KindRefused, Op: OpConnect, connack: rc,
			Message: fmt.Sprintf("DPS refused the connection (CONNACK %d: %s)", rc, connackText(rc))}
	}
	cause := err
	if dialErr != nil {
		cause = dialErr
	}
	return transportError(cause, method, addr)
}

// transportError classifies a failed dial or TLS handshake.
func transportError(err error, method AuthMethod, addr string) *Error {
	e := &Error{Kind: KindNetwork, Op: OpConnect, Err: err}
	var (
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		unknown   x509.UnknownAuthorityError
		verifyErr *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		dnsErr    *net.DNSError
		opErr     *net.OpError
	)
	switch {
	case errors.As(err, &hostErr):
		e.Kind, e.Message = KindTLS, "the server certificate is for another host"
		e.hint = fmt.Sprintf("the certificate of %s does not name it: check advanced.dps_endpoint (use the host name DPS's certificate is issued for)", addr)
	case errors.As(err, &invalid) && (invalid.Reason == x509.Expired):
		e.Kind, e.Message = KindTLS, "the server certificate is expired or not yet valid"
		e.hint = "check the device clock (timedatectl; an unset clock reads 1970), then advanced.trust_bundle_file if a proxy presents its own certificate"
	case errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &verifyErr):
		e.Kind, e.Message = KindTLS, "the server certificate is not trusted"
		e.hint = hintTLS
	case errors.As(err, &header):
		e.Kind, e.Message = KindTLS, "the endpoint does not speak TLS"
		e.hint = fmt.Sprintf("%s answered without TLS: check the port in advanced.dps_endpoint (DPS uses 8883)", addr)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// The server aborted the handshake with an alert.
		e.Kind, e.Message = KindTLS, "DPS rejected the TLS handshake"
		if method == AuthX509 {
			e.hint = "DPS did not accept the birth certificate: include the intermediates in the certificate file, and check the enrolled CA or thumbprint"
		} else {
			e.hint = "check advanced.dps_endpoint, and for a TLS-inspecting proxy, that it allows this connection"
		}
	case errors.As(err, &dnsErr):
		e.Message = "cannot resolve the DPS host name"
		e.hint = fmt.Sprintf("check DNS on the device and the host in advanced.dps_endpoint (%s); the agent retries", addr)
	default:
		e.Message = "cannot connect to DPS"
		e.hint = fmt.Sprintf("check the network, the firewall (outbound TCP to %s) and advanced.dps_endpoint; the agent retries", addr)
	}
	return e
}

func authHint(method AuthMethod) string {
	switch method {
	case AuthSymmetricKey:
		return "DPS did not accept the symmetric key for this registration ID and ID scope: check id_scope, registration_id and the key file, " +
			"and that an enrollment exists (if the key is an enrollment group's, set onboarding.group_key: true)"
	case AuthGroupKey:
		return "DPS did not accept the key derived from the group key: check id_scope, registration_id and the group key file, " +
			"and that the enrollment group exists (if the key is an individual enrollment's, set onboarding.group_key: false)"
	case AuthX509:
		return "DPS did not accept the birth certificate: its CN must equal registration_id, the chain must include the intermediates, " +
			"and an enrollment must exist for it (its CA in a group, or its thumbprint individually); check id_scope"
	}
	return hintAuth
}

func connackText(rc byte) string {
	switch rc {
	case connackBadProtocol:
		return "unacceptable protocol version"
	case connackIdentifierRejected:
		return "identifier rejected"
	case connackServerUnavailable:
		return "server unavailable"
	case connackBadCredentials:
		return "bad user name or password"
	case connackNotAuthorized:
		return "not authorized"
	}
	return "unknown"
}
