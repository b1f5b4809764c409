package agent

import (
	"time"

	"github.com/dpsagent/dpsagent/agent/store"
)

// State is where the agent stands, as `dpsagent status` names it.
type State string

// States.
const (
	StateStarting        State = "starting"
	StateUnprovisioned   State = "unprovisioned"
	StateProvisioning    State = "provisioning"
	StateConnected       State = "connected"
	StateDisconnected    State = "disconnected"
	StateRenewing        State = "renewing"
	StateWaitingForClock State = "waiting_for_clock"
	StateError           State = "error"
)

// Status is registration and certificate status together, in one place.
type Status struct {
	State          State
	IDScope        string
	RegistrationID string
	DeviceID       string
	AssignedHub    string
	Connected      bool
	ConnectedSince time.Time
	Certificate    *CertificateStatus
	// NextRenewal is when the certificate is due for renewal, and why then.
	NextRenewal       time.Time
	NextRenewalReason string
	LastRenewal       *RenewalResult
	LastError         *store.Failure
}

// RenewalResult is the outcome of the last renewal attempt.
type RenewalResult struct {
	At     time.Time
	Result string // "success" or "failure"
	Path   string // "hub" or "dps"
}

// CertificateStatus describes the identity in use.
type CertificateStatus struct {
	Subject      string
	Issuer       string
	Serial       string
	NotBefore    time.Time
	NotAfter     time.Time
	KeyAlgorithm string
	KeyStorage   string
}

// Status returns the current status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// updateStatus changes the status under the lock and tells OnStatus.
func (a *Agent) updateStatus(fn func(*Status)) {
	a.mu.Lock()
	fn(&a.status)
	s := a.status
	a.mu.Unlock()
	if a.opts.OnStatus != nil {
		a.opts.OnStatus(s)
	}
}

func (a *Agent) setState(st State) { a.updateStatus(func(s *Status) { s.State = st }) }

// recordError keeps the failure for the status screen, in memory and in the
// state directory, so `dpsagent status` shows it after a restart too.
func (a *Agent) recordError(err error, fallbackHint string) {
	h := Hint(err)
	if h == "" {
		h = fallbackHint
	}
	f := &store.Failure{At: a.clock.Now().UTC(), Message: err.Error(), Hint: h, Code: errorCode(err)}
	a.updateStatus(func(s *Status) { s.LastError = f })
	if uerr := a.opts.Store.Update(func(m *store.Manifest) error { m.LastError = f; return nil }); uerr != nil {
		a.log.Warn("could not record the error in the state directory")
	}
}

func errorCode(err error) string {
	type coder interface{ ErrorCode() string }
	if c, ok := err.(coder); ok {
		return c.ErrorCode()
	}
	return ""
}
