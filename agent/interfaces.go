package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/dpsagent/dpsagent/agent/store"
)

// Registrar registers the device with DPS using its onboarding credential.
type Registrar interface {
	// Register sends a registration with csr (DER; nil asks for no
	// certificate) and waits for the terminal answer. Errors may implement
	// Retryable() bool, RetryAfter() time.Duration and Hint() string.
	Register(ctx context.Context, csr []byte) (*Registration, error)
}

// Registration is DPS's answer to a successful registration.
type Registration struct {
	OperationID string
	Status      string
	Substatus   string
	AssignedHub string
	DeviceID    string
	// Chain is issuedCertificateChain as received (DER), in no trusted order.
	Chain [][]byte
}

// HubConnector opens sessions with IoT Hub.
type HubConnector interface {
	// Connect connects to target and keeps the session up (reconnecting on
	// network failures) until Close. It returns once the first connection is
	// established, or with the first connection's error.
	Connect(ctx context.Context, target HubTarget) (HubSession, error)
}

// HubTarget is what a hub session needs from the agent.
type HubTarget struct {
	Host     string
	DeviceID string
	// Certificate returns the identity to present; it is called at every
	// (re)connection, so a renewed identity is picked up without new plumbing.
	// Nil means the connector authenticates with a SAS token of its own.
	Certificate func() (*tls.Certificate, error)
	// OnMethod answers a direct method; OnDesired receives desired-property
	// patches; OnConnection reports connection changes (err is why it dropped).
	OnMethod     func(ctx context.Context, name string, payload []byte) (status int, response []byte)
	OnDesired    func(patch map[string]any, version int)
	OnConnection func(connected bool, err error)
}

// HubSession is a connected hub session.
type HubSession interface {
	// GetTwin reads the device twin: its desired and reported sections.
	GetTwin(ctx context.Context) (desired, reported map[string]any, desiredVersion, reportedVersion int, err error)
	UpdateReported(ctx context.Context, patch map[string]any) (version int, err error)
	IssueCertificate(ctx context.Context, csr []byte) (chain [][]byte, err error)
	Close() error
}

// StateStore is the state directory (agent/store.Store).
type StateStore interface {
	Load() (*store.Manifest, error)
	Update(fn func(m *store.Manifest) error) error
	WriteBlob(pattern string, data []byte) (string, error)
	ReadFile(name string) ([]byte, error)
	RemoveBlob(name string) error
	StageNext(id store.Identity) error
	PromoteNext() error
	DiscardNext() error
}

// Clock is the wall clock, injectable so schedules are tested without sleeping.
type Clock interface {
	Now() time.Time
	// After waits for d; it is time.After for the real clock.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// ErrHubUnauthorized is what a hub connector's errors wrap (or report through
// Unauthorized() bool) when the hub refuses the identity: revoked, deleted or
// moved to another hub. The agent then goes back to DPS.
var ErrHubUnauthorized = errors.New("the hub refused this device's identity")

// ErrKeys marks failures of the key backend (the TPM), as opposed to the cloud's.
var ErrKeys = errors.New("key backend")

// Retryable reports whether err is worth retrying soon (network failures,
// throttling, server errors) rather than a refusal someone must fix. Cloud
// packages say so through a Retryable() bool method, so they need not import
// this one.
func Retryable(err error) bool {
	var r interface{ Retryable() bool }
	if errors.As(err, &r) {
		return r.Retryable()
	}
	return !errors.Is(err, ErrBadChain) && !errors.Is(err, ErrKeys) // network errors and the like
}

func retryAfter(err error) time.Duration {
	var r interface{ RetryAfter() time.Duration }
	if errors.As(err, &r) {
		return r.RetryAfter()
	}
	return 0
}

// Hint is the plain-language advice an error carries (through a Hint() string
// method), or "".
func Hint(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		return h.Hint()
	}
	if errors.Is(err, ErrBadChain) {
		return "nothing was stored; the agent keeps its current identity and tries again later"
	}
	return ""
}

func unauthorized(err error) bool {
	var u interface{ Unauthorized() bool }
	return errors.Is(err, ErrHubUnauthorized) || (errors.As(err, &u) && u.Unauthorized())
}
