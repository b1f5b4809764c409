package hub

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrUnauthorized: the hub refused the device's identity (CONNACK 4 or
	// 5: a revoked or expired certificate, a deleted device, or one moved to
	// another hub). Reconnecting with the same identity will not help; the
	// device must go back to DPS with its onboarding credential.
	ErrUnauthorized = errors.New("the hub refused the device's identity")
	// ErrNetwork: the hub could not be reached or the connection broke
	// before a CONNACK. Retry with backoff.
	ErrNetwork = errors.New("the hub could not be reached")
	// ErrNotConnected: an operation needed a connection and there was none
	// in time.
	ErrNotConnected = errors.New("not connected to the hub")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("the hub client is closed")
	// ErrNoAnswer: the hub did not answer a request in time.
	ErrNoAnswer = errors.New("the hub did not answer")
	// ErrBadAnswer: the hub's answer could not be understood.
	ErrBadAnswer = errors.New("the hub's answer is malformed")
)

// ConnectError is a failed connection attempt.
type ConnectError struct {
	Host string
	// Code is the CONNACK return code, 0 when the attempt failed before a
	// CONNACK (network, TLS, or the identity callback).
	Code byte
	Err  error
}

// CONNACK return codes of MQTT 3.1.1 (§3.2.2.3).
const (
	connackProtocol     = 1
	connackIdentifier   = 2
	connackUnavailable  = 3
	connackBadUserPass  = 4
	connackUnauthorized = 5
)

func (e *ConnectError) Error() string {
	var what string
	switch e.Code {
	case 0:
		what = e.Err.Error()
	case connackProtocol:
		what = "refused: unacceptable protocol version"
	case connackIdentifier:
		what = "refused: client identifier rejected"
	case connackUnavailable:
		what = "refused: server unavailable"
	case connackBadUserPass:
		what = "refused: bad user name or password"
	case connackUnauthorized:
		what = "refused: not authorized"
	default:
		what = fmt.Sprintf("refused with CONNACK code %d", e.Code)
	}
	return fmt.Sprintf("connect to IoT Hub %s: %s; %s", e.Host, what, e.Hint())
}

// Unwrap exposes ErrUnauthorized for refused identities and the cause.
func (e *ConnectError) Unwrap() []error {
	out := []error{}
	if e.Unauthorized() {
		out = append(out, ErrUnauthorized)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// Unauthorized reports whether the hub refused the identity itself.
func (e *ConnectError) Unauthorized() bool {
	return e.Code == connackBadUserPass || e.Code == connackUnauthorized
}

// Retryable reports whether trying again with backoff can succeed. A refused
// identity or a refused protocol or client ID cannot.
func (e *ConnectError) Retryable() bool {
	switch e.Code {
	case connackProtocol, connackIdentifier, connackBadUserPass, connackUnauthorized:
		return false
	}
	return true
}

// Hint says what to do next, in plain language.
func (e *ConnectError) Hint() string {
	switch e.Code {
	case 0:
		if errors.Is(e.Err, ErrNetwork) {
			return "check the network, the hub host name and port, and the trusted CAs; retrying with backoff"
		}
		return "retrying with backoff"
	case connackProtocol, connackIdentifier:
		return "the hub does not accept this client (MQTT 3.1.1 and the device ID as client ID); check the device ID"
	case connackUnavailable:
		return "the hub is busy or throttling connections; retrying with backoff"
	case connackBadUserPass, connackUnauthorized:
		return "the certificate or key was revoked or has expired, or the device was deleted or moved to another hub; provision again through DPS"
	}
	return "retrying with backoff"
}

// Error is an error answer from the hub to a twin or credential request
// (reference §2.2, §2.3).
type Error struct {
	// Op is the request: "issueCertificate", "twin GET", "reported PATCH".
	Op string
	// Status is the topic's HTTP-like status (400, 409, 429, 503, ...).
	Status int
	// Code is the body's errorCode (400004, 409005, ...), 0 when absent.
	Code       int
	Message    string
	TrackingID string
	// RetryAfter is how long the hub asked the device to wait, 0 if it did
	// not say.
	RetryAfter time.Duration
	// Info is the credential API's detail, nil when absent.
	Info *ErrorInfo
}

// ErrorInfo is the "info" object of a credential API error.
type ErrorInfo struct {
	CorrelationID     string
	CredentialError   string
	CredentialMessage string
	// RequestID is the request an active operation belongs to (409).
	RequestID        string
	OperationExpires time.Time
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: the hub answered %d", e.Op, e.Status)
	if e.Code != 0 {
		fmt.Fprintf(&b, " (error %d)", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Info != nil && e.Info.CredentialMessage != "" {
		fmt.Fprintf(&b, " (%s)", e.Info.CredentialMessage)
	}
	if e.TrackingID != "" {
		fmt.Fprintf(&b, " [tracking ID %s]", e.TrackingID)
	}
	b.WriteString("; ")
	b.WriteString(e.Hint())
	return b.String()
}

// Retryable reports whether the same request may succeed later: throttling
// (429) and server errors (5xx). The codes drifted between service versions,
// so the status decides (reference §2.3).
func (e *Error) Retryable() bool { return e.Status == 429 || e.Status >= 500 }

// Hint says, in plain language, what went wrong and what to do next.
func (e *Error) Hint() string {
	switch e.Code {
	case 400004:
		return "the request was refused as invalid (device ID mismatch, bad base64, a CSR over 8 KB, or an unknown field); build a new CSR for this device, repeating this one will not help"
	case 400006:
		return "the request was not valid JSON; this is a bug in the client"
	case 400037:
		return "the certificate service refused the CSR after accepting it (key type or subject not allowed by the policy); make a new CSR, ECDSA P-384 is what Azure documents"
	case 400040:
		return "the CSR could not be decoded or its signature did not verify; build a new CSR with the device's key"
	}
	switch s := e.Status; {
	case s == 409:
		return "another certificate operation is active for this device; resubmit with replace \"*\" to cancel it, or wait until it expires"
	case s == 412:
		return "no pending certificate operation matches the replace value; submit a fresh request"
	case s == 429:
		if e.RetryAfter > 0 {
			return fmt.Sprintf("the hub is throttling this device; retry after %s", e.RetryAfter)
		}
		return "the hub is throttling this device; retry later with backoff"
	case s == 503:
		return "the hub's service is unavailable; retry later with backoff"
	case s >= 500:
		return "the hub had an internal error; retry later with backoff"
	case s == 401 || s == 403:
		return "the hub refused the device's credentials for this request; if it persists, provision again through DPS"
	case s == 404:
		return "the hub does not know this request or device; check the api-version (the credential API needs 2025-08-01-preview) and that the device is assigned to this hub"
	case s == 400:
		return "the hub refused the request as invalid; it will not succeed if repeated unchanged"
	}
	return "unexpected answer; retry later, and report it if it persists"
}
