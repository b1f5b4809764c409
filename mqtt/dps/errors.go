package dps

import (
	"fmt"
	"strings"
	"time"
)

// Kind says what went wrong, at the level a caller acts on.
type Kind int

// Error kinds.
const (
	// KindService: DPS answered with an error status, or ended the
	// registration as failed or disabled.
	KindService Kind = iota + 1
	// KindAuth: DPS refused the connection (CONNACK 4 or 5): the onboarding
	// credential, ID scope or registration ID is not accepted.
	KindAuth
	// KindRefused: DPS refused the connection for another reason (CONNACK
	// 1 to 3); only "server unavailable" is worth retrying.
	KindRefused
	// KindTLS: the server's certificate could not be verified, or the TLS
	// handshake was rejected.
	KindTLS
	// KindNetwork: DNS, TCP or the connection failed or was lost.
	KindNetwork
	// KindTimeout: DPS did not answer in time.
	KindTimeout
	// KindProtocol: DPS's answer could not be understood.
	KindProtocol
)

func (k Kind) String() string {
	switch k {
	case KindService:
		return "service error"
	case KindAuth:
		return "authentication refused"
	case KindRefused:
		return "connection refused"
	case KindTLS:
		return "TLS error"
	case KindNetwork:
		return "network error"
	case KindTimeout:
		return "timeout"
	case KindProtocol:
		return "unexpected answer"
	}
	return fmt.Sprintf("kind %d", int(k))
}

// Operations named in Error.Op.
const (
	OpConnect   = "connect"
	OpSubscribe = "subscribe"
	OpRegister  = "register"
	OpPoll      = "poll"
)

// Registration states that end a registration in failure (Error.State).
const (
	StateFailed   = "failed"
	StateDisabled = "disabled"
)

// Error is a failed registration, with what the service said. It never holds
// the SAS token or the key.
type Error struct {
	Kind Kind
	// Op is the step that failed: connect, subscribe, register or poll.
	Op string
	// Status is the status in DPS's response topic (an HTTP status); 0 when
	// no response came.
	Status int
	// Code is DPS's errorCode (e.g. 401002, from the error body or from
	// registrationState), 0 when none was given.
	Code int
	// TrackingID is DPS's trackingId, for Microsoft support.
	TrackingID string
	// Message is the service's message, or what the client observed.
	Message string
	// Wait is the retry-after DPS gave with this answer; 0 when none.
	// RetryAfter returns it.
	Wait time.Duration
	// State is the registration status when DPS ended the registration:
	// StateFailed or StateDisabled; empty otherwise.
	State string
	// Err is the underlying cause (a network or TLS error), if any.
	Err error

	// connack is the CONNACK return code of a refused connection.
	connack byte
	// hint overrides the catalogue where the client knows more.
	hint string
}

// Unwrap gives errors.Is and errors.As the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Error reads as: what failed, what DPS said, and the hint.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("DPS ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	switch {
	case e.State != "":
		b.WriteString("registration " + e.State)
	case e.Status != 0:
		fmt.Fprintf(&b, "status %d", e.Status)
	default:
		b.WriteString(e.Kind.String())
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, " (error %d)", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.TrackingID != "" {
		b.WriteString(" [tracking ID " + e.TrackingID + "]")
	}
	if e.Wait > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.Wait)
	}
	if h := e.Hint(); h != "" {
		b.WriteString("; " + h)
	}
	return b.String()
}

// Retryable reports whether the same registration may succeed later without
// a change on the device or in DPS: throttling, server errors, network
// failures and timeouts. Client errors (4xx), refused credentials, TLS
// verification failures and disabled enrollments are not.
func (e *Error) Retryable() bool {
	switch e.Kind {
	case KindNetwork, KindTimeout, KindProtocol:
		return true
	case KindRefused:
		return e.connack == connackServerUnavailable
	case KindService:
		if e.State == StateDisabled {
			return false
		}
		s := e.httpStatus()
		return s == 429 || s >= 500
	}
	return false
}

// RetryAfter is how long DPS asked to wait before trying again; 0 when it
// did not say.
func (e *Error) RetryAfter() time.Duration { return e.Wait }

// httpStatus is the HTTP status that classifies the error: errorCode/1000
// when the code is a DPS error code (it is the finer and the one
// registrationState carries), else the topic status.
func (e *Error) httpStatus() int {
	if s := e.Code / 1000; s >= 400 && s <= 599 {
		return s
	}
	if e.Code >= 400 && e.Code <= 599 {
		return e.Code
	}
	return e.Status
}

// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
const (
	connackBadProtocol        = 1
	connackIdentifierRejected = 2
	connackServerUnavailable  = 3
	connackBadCredentials     = 4
	connackNotAuthorized      = 5
)
