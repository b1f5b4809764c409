package emulator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fault is an injected failure, as POST /api/faults takes it. A fault applies
// to one endpoint, a device (or "*") and an operation (or "*"), either a set
// number of times (Count) or with a probability per matching request.
type Fault struct {
	ID          int      `json:"id"`
	Endpoint    string   `json:"endpoint"`  // dps, hub or credential_api
	Device      string   `json:"device"`    // a registration/device ID, or "*"
	Operation   string   `json:"operation"` // see the Op constants; "*" for any
	Action      string   `json:"action"`    // see the Action constants
	Count       *int     `json:"count"`     // remaining matches; null with probability
	Probability *float64 `json:"probability"`
	Delay       Duration `json:"delay"`       // for delay
	Status      int      `json:"status"`      // for error (500, 503, ...); throttle uses 429
	RetryAfter  int      `json:"retry_after"` // seconds, for throttle and error
	Hits        int      `json:"hits"`
}

// Fault endpoints.
const (
	EndpointDPS           = "dps"
	EndpointHub           = "hub"
	EndpointCredentialAPI = "credential_api"
)

// Operations faults can target.
const (
	OpConnect   = "connect"   // any endpoint: the MQTT CONNECT
	OpRegister  = "register"  // dps: the register request
	OpPoll      = "poll"      // dps: an operation status poll
	OpTwin      = "twin"      // hub: twin GET and reported PATCH
	OpTelemetry = "telemetry" // hub: device-to-cloud messages
	OpIssue     = "issue"     // credential_api: issueCertificate
)

// Fault actions.
const (
	ActionDrop          = "drop"           // close the connection instead of answering
	ActionDelay         = "delay"          // answer after Delay
	ActionThrottle      = "throttle"       // 429 with retry-after
	ActionError         = "error"          // Status (default 500), with retry-after if set
	ActionMalformedJSON = "malformed_json" // a body that is not JSON
	ActionWrongKey      = "wrong_key"      // an issued chain whose leaf is for another key
	ActionExpired       = "expired"        // an issued certificate already expired
	ActionWrongCN       = "wrong_cn"       // an issued certificate for another name
	ActionHostile       = "hostile"        // oversized and deeply nested JSON
)

var (
	faultEndpoints = []string{EndpointDPS, EndpointHub, EndpointCredentialAPI}
	faultActions   = []string{ActionDrop, ActionDelay, ActionThrottle, ActionError, ActionMalformedJSON, ActionWrongKey, ActionExpired, ActionWrongCN, ActionHostile}

	// faultOperations are the operations each endpoint consults faults for.
	faultOperations = map[string][]string{
		EndpointDPS:           {OpConnect, OpRegister, OpPoll},
		EndpointHub:           {OpConnect, OpTwin, OpTelemetry},
		EndpointCredentialAPI: {OpIssue},
	}
	// faultEndpointActions are the actions each endpoint can carry out: the
	// hub's own answers (twin, telemetry) carry no certificate to spoil.
	faultEndpointActions = map[string][]string{
		EndpointDPS:           faultActions,
		EndpointHub:           {ActionDrop, ActionDelay, ActionThrottle, ActionError, ActionMalformedJSON, ActionHostile},
		EndpointCredentialAPI: faultActions,
	}
)

// Validate checks a fault as posted to the admin API. A fault no request
// could ever match (an operation the endpoint does not have, an action it
// cannot carry out) is refused, so a typing mistake does not pass for a
// fault that silently never fires.
func (f *Fault) Validate() error {
	if !slices.Contains(faultEndpoints, f.Endpoint) {
		return fmt.Errorf("endpoint %q: use one of %s", f.Endpoint, strings.Join(faultEndpoints, ", "))
	}
	if !slices.Contains(faultActions, f.Action) {
		return fmt.Errorf("action %q: use one of %s", f.Action, strings.Join(faultActions, ", "))
	}
	if actions := faultEndpointActions[f.Endpoint]; !slices.Contains(actions, f.Action) {
		return fmt.Errorf("action %q does not apply to endpoint %s: use one of %s", f.Action, f.Endpoint, strings.Join(actions, ", "))
	}
	if f.Device == "" {
		f.Device = "*"
	}
	if f.Operation == "" {
		f.Operation = "*"
	}
	if ops := faultOperations[f.Endpoint]; f.Operation != "*" && !slices.Contains(ops, f.Operation) {
		return fmt.Errorf("operation %q: endpoint %s has %s, or \"*\" for any", f.Operation, f.Endpoint, strings.Join(ops, ", "))
	}
	if f.Operation != "*" && !FaultApplies(f.Endpoint, f.Operation, f.Action) {
		var fits []string
		for _, a := range faultEndpointActions[f.Endpoint] {
			if FaultApplies(f.Endpoint, f.Operation, a) {
				fits = append(fits, a)
			}
		}
		return fmt.Errorf("action %q cannot be carried out at %s %s: use one of %s, or operation \"*\"",
			f.Action, f.Endpoint, f.Operation, strings.Join(fits, ", "))
	}
	switch {
	case f.Count == nil && f.Probability == nil:
		f.Count = ptr(1)
	case f.Count != nil && *f.Count < 1:
		return errors.New("count must be at least 1")
	case f.Probability != nil && (*f.Probability <= 0 || *f.Probability > 1):
		return errors.New("probability must be in (0, 1]")
	}
	if f.Action == ActionDelay && f.Delay <= 0 {
		return errors.New("a delay fault needs delay, such as \"5s\"")
	}
	if f.Action == ActionError && f.Status == 0 {
		f.Status = 500
	}
	if f.Action == ActionThrottle {
		f.Status = 429
		if f.RetryAfter == 0 {
			f.RetryAfter = 5
		}
	}
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		return fmt.Errorf("status %d: use an HTTP error status from 400 to 599", f.Status)
	}
	return nil
}

// FaultApplies reports whether action can be carried out at operation of
// endpoint. A CONNECT has only its CONNACK (or silence) to spoil and hub
// telemetry only its PUBACK, so there a fault can drop, delay, throttle or
// fail; answers with a body can also be malformed or hostile, and those that
// carry a certificate can spoil it. Matching uses it so that a fault for
// operation "*" waits for a request it applies to instead of being used up by
// the CONNECT before it.
func FaultApplies(endpoint, operation, action string) bool {
	if !slices.Contains(faultEndpointActions[endpoint], action) {
		return false
	}
	if operation == OpConnect || (endpoint == EndpointHub && operation == OpTelemetry) {
		switch action {
		case ActionDrop, ActionDelay, ActionThrottle, ActionError:
			return true
		}
		return false
	}
	return true
}

// Faults holds the injected faults.
type Faults struct {
	mu     sync.Mutex
	faults []*Fault
	nextID int
	rand   *rand.Rand
}

// NewFaults uses r for probabilistic faults; nil means a random seed.
func NewFaults(r *rand.Rand) *Faults {
	if r == nil {
		r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Faults{rand: r}
}

// Add validates and installs a fault, returning it with its ID.
func (fs *Faults) Add(f Fault) (Fault, error) {
	if err := f.Validate(); err != nil {
		return Fault{}, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.nextID++
	f.ID = fs.nextID
	fs.faults = append(fs.faults, &f)
	return f, nil
}

// List returns the installed faults.
func (fs *Faults) List() []Fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]Fault, len(fs.faults))
	for i, f := range fs.faults {
		out[i] = *f
	}
	return out
}

// Clear removes every fault.
func (fs *Faults) Clear() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.faults = nil
}

// Match returns the first fault that applies to this request, consuming one of
// its count; ok is false when the request should be served normally. Faults
// whose action cannot be carried out at this operation (FaultApplies) are
// skipped and left for a later request.
func (fs *Faults) Match(endpoint, device, operation string) (Fault, bool) {
	return fs.MatchActions(endpoint, device, operation, func(action string) bool {
		return FaultApplies(endpoint, operation, action)
	})
}

// MatchActions is Match with the caller's own test of which actions it can
// carry out at this stage (applies nil: any), for an operation served in
// stages (DPS checks answer faults and certificate faults at different
// points of a register request). A fault is consumed only where it
// applies, so a "wrong_key" fault for operation "*" waits for the request
// that issues a certificate instead of being used up by the CONNECT before it.
func (fs *Faults) MatchActions(endpoint, device, operation string, applies func(action string) bool) (Fault, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.faults {
		if f.Endpoint != endpoint || (f.Device != "*" && !strings.EqualFold(f.Device, device)) ||
			(f.Operation != "*" && f.Operation != operation) || (applies != nil && !applies(f.Action)) {
			continue
		}
		if f.Probability != nil && fs.rand.Float64() >= *f.Probability {
			continue
		}
		f.Hits++
		hit := *f
		if f.Count != nil {
			*f.Count--
			if *f.Count == 0 {
				fs.faults = slices.Delete(fs.faults, i, i+1)
			}
		}
		return hit, true
	}
	return Fault{}, false
}

// DelayDuration is the fault's delay as a time.Duration.
func (f Fault) DelayDuration() time.Duration { return time.Duration(f.Delay) }
