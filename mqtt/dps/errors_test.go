package dps

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// The catalogue of hints and the retry decision for DPS's documented
// statuses and codes (reference §1.5 and DOC-TROUBLE).
func TestServiceErrorCatalogue(t *testing.T) {
	tests := []struct {
		name      string
		e         Error
		retryable bool
		hint      string
	}{
		{"400", Error{Status: 400}, false, "rejected the request as invalid"},
		{"400 CSR code", Error{Status: 400, Code: 400004}, false, "CSR"},
		{"400000 CSR not configured", Error{Status: 400, Code: 400000}, false, "not set up to issue certificates"},
		{"400040 CSR undecodable", Error{Status: 400, Code: 400040}, false, "decode the CSR"},
		{"404 on poll", Error{Op: OpPoll, Status: 404, Code: 404202}, false, "no longer knows this registration operation"},
		{"401002", Error{Status: 401, Code: 401002}, false, "the onboarding credential was not accepted: check the key"},
		{"401002 mentions intermediates", Error{Status: 401, Code: 401002}, false, "include the intermediates in the birth certificate chain"},
		{"401 other code", Error{Status: 401, Code: 401000}, false, "onboarding credential was not accepted"},
		{"403", Error{Status: 403}, false, "onboarding credential was not accepted"},
		{"404", Error{Status: 404, Code: 404201}, false, "no enrollment for this registration ID in this ID scope"},
		{"405", Error{Status: 405}, false, "did not accept the request's form"},
		{"409", Error{Status: 409, Code: 409001}, false, "in progress"},
		{"412", Error{Status: 412, Code: 412001}, false, "precondition failed"},
		{"415", Error{Status: 415}, false, "did not accept the request's form"},
		{"429", Error{Status: 429, Code: 429001}, true, "throttling"},
		{"500", Error{Status: 500, Code: 500000}, true, "temporary"},
		{"503 without code", Error{Status: 503}, true, "temporary"},
		{"code decides over topic status", Error{Status: 200, Code: 429002, State: StateFailed}, true, "throttling"},
		{"short code form", Error{Status: 200, Code: 404, State: StateFailed}, false, "no enrollment"},
		{"failed, no code", Error{Status: 200, State: StateFailed}, false, "could not assign"},
		{"disabled", Error{Status: 200, State: StateDisabled}, false, "disabled in DPS"},
		{"disabled with a 5xx code stays final", Error{Status: 200, Code: 500000, State: StateDisabled}, false, "disabled in DPS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e
			e.Kind = KindService
			if e.Op == "" {
				e.Op = OpRegister
			}
			if e.Retryable() != tt.retryable {
				t.Errorf("Retryable() = %v, want %v", e.Retryable(), tt.retryable)
			}
			if !strings.Contains(e.Hint(), tt.hint) {
				t.Errorf("Hint() = %q, want it to contain %q", e.Hint(), tt.hint)
			}
		})
	}
}

func TestKindRetryable(t *testing.T) {
	tests := []struct {
		e    Error
		want bool
	}{
		{Error{Kind: KindNetwork}, true},
		{Error{Kind: KindTimeout}, true},
		{Error{Kind: KindProtocol}, true},
		{Error{Kind: KindAuth, connack: connackNotAuthorized}, false},
		{Error{Kind: KindTLS}, false},
		{Error{Kind: KindRefused, connack: connackServerUnavailable}, true},
		{Error{Kind: KindRefused, connack: connackIdentifierRejected}, false},
		{Error{Kind: KindRefused, connack: connackBadProtocol}, false},
	}
	for _, tt := range tests {
		if got := tt.e.Retryable(); got != tt.want {
			t.Errorf("%v (connack %d): Retryable() = %v, want %v", tt.e.Kind, tt.e.connack, got, tt.want)
		}
		if tt.e.Hint() == "" {
			t.Errorf("%v: no hint", tt.e.Kind)
		}
	}
}

func TestErrorText(t *testing.T) {
	cause := errors.New("read: connection reset")
	tests := []struct {
		e    *Error
		want string
	}{
		{&Error{Kind: KindService, Op: OpRegister, Status: 401, Code: 401002, Message: "Invalid certificate.", TrackingID: "abc"},
			"DPS register: status 401 (error 401002): Invalid certificate. [tracking ID abc]; " + hintCredential},
		{&Error{Kind: KindService, Op: OpPoll, Status: 200, State: StateFailed, Code: 500000, Message: "boom", Wait: 3 * time.Second},
			"DPS poll: registration failed (error 500000): boom (retry after 3s); " + hintServer},
		{&Error{Kind: KindNetwork, Op: OpPoll, Message: "the connection to DPS was lost", Err: cause},
			"DPS poll: network error: the connection to DPS was lost: read: connection reset; DPS could not be reached: check the network, DNS and the firewall (outbound TCP 8883); the agent retries"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q\nwant      %q", got, tt.want)
		}
	}
	wrapped := fmt.Errorf("register: %w", tests[2].e)
	if !errors.Is(wrapped, cause) {
		t.Error("the cause is not reachable with errors.Is")
	}
}

// Connection failures are told apart by their cause, whatever wraps it.
func TestTransportErrorClassification(t *testing.T) {
	leaf := &x509.Certificate{}
	wrap := func(err error) error {
		return fmt.Errorf("network Error : %w", &net.OpError{Op: "dial", Net: "tcp", Err: err})
	}
	tests := []struct {
		name   string
		err    error
		method AuthMethod
		kind   Kind
		hint   string
	}{
		{"unknown authority", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{Cert: leaf}}), AuthSymmetricKey, KindTLS, "trust_bundle_file"},
		{"wrong host", wrap(&tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: leaf, Host: "x"}}), AuthSymmetricKey, KindTLS, "advanced.dps_endpoint"},
		{"expired", wrap(&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}}), AuthSymmetricKey, KindTLS, "clock"},
		{"other invalid", wrap(&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.NotAuthorizedToSign}}), AuthSymmetricKey, KindTLS, "trust_bundle_file"},
		{"not TLS", wrap(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), AuthSymmetricKey, KindTLS, "port"},
		{"alert, X.509", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, AuthX509, KindTLS, "intermediates"},
		{"DNS", wrap(&net.DNSError{Err: "no such host", Name: "dps.invalid", IsNotFound: true}), AuthSymmetricKey, KindNetwork, "DNS"},
		{"refused", wrap(errors.New("connect: connection refused")), AuthSymmetricKey, KindNetwork, "firewall"},
		{"deadline", wrap(context.DeadlineExceeded), AuthSymmetricKey, KindNetwork, "network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := transportError(tt.err, tt.method, "dps.example:8883")
			if e.Kind != tt.kind || !strings.Contains(e.Hint(), tt.hint) || !errors.Is(e, tt.err) {
				t.Errorf("kind %v hint %q; want %v with %q, wrapping the cause", e.Kind, e.Hint(), tt.kind, tt.hint)
			}
		})
	}
}

func TestConnectErrorPrefersDialError(t *testing.T) {
	dial := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{Cert: &x509.Certificate{}}}
	e := connectError(errors.New("network Error : opaque"), 0xFE, dial, AuthSymmetricKey, "a:1")
	if e.Kind != KindTLS || !errors.Is(e, dial) {
		t.Errorf("kind %v, cause %v; want the dial's TLS error", e.Kind, e.Err)
	}
	e = connectError(errors.New("not Authorized"), connackNotAuthorized, nil, AuthX509, "a:1")
	if e.Kind != KindAuth || !strings.Contains(e.Hint(), "intermediates") || !strings.Contains(e.Error(), "CONNACK 5") {
		t.Errorf("X.509 refusal: %v", e)
	}
}
