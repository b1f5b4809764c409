package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent/renewal"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// Config is what the agent needs to know about this device.
type Config struct {
	IDScope        string
	RegistrationID string
	KeyAlgorithm   keys.Algorithm
	Renewal        renewal.Policy
	// SAS selects the legacy identity mode: no CSR, the hub reached with the
	// onboarding symmetric key (the hub connector holds it). For DPS instances
	// without certificate management; an X.509 identity is the goal.
	SAS bool
}

// Options are the agent's collaborators. Keys, Store, Registrar and Hub are
// required; nil Clock, Logger and Rand mean the real ones.
type Options struct {
	Config    Config
	Keys      keys.Backend
	Store     StateStore
	Registrar Registrar
	Hub       HubConnector
	Clock     Clock
	Logger    *zap.Logger
	Rand      *rand.Rand
	// Version is reported in the twin; BuildDate bounds clock sanity checks.
	Version   string
	BuildDate time.Time
	// OnStatus, when set, is called after every status change (systemd
	// notification, metrics, the local API).
	OnStatus func(Status)
	// Heartbeat, when set, is called from the agent's loops at least every
	// HeartbeatInterval while they are alive (the systemd watchdog). A loop
	// stuck in a call does not beat, and the service manager restarts it.
	Heartbeat func()
	// AfterRenewal, when set, is called once a renewed identity is in use
	// (the administrator's hook command). Its error is logged, not fatal.
	AfterRenewal func(ctx context.Context, r Renewed) error
}

// Renewed describes an identity just switched to, for AfterRenewal.
type Renewed struct {
	DeviceID     string
	AssignedHub  string
	Serial       string
	NotBefore    time.Time
	NotAfter     time.Time
	KeyAlgorithm string
	KeyStorage   string
	Path         string // hub or dps
	// ChainPEM is the issued chain, leaf first: public, safe to hand on.
	ChainPEM []byte
}

// Agent runs the device's lifecycle. Create it with New, run it with Run.
type Agent struct {
	cfg    Config
	opts   Options
	clock  Clock
	log    *zap.Logger
	rand   *rand.Rand
	randMu sync.Mutex

	mu     sync.Mutex
	status Status

	renewNow chan struct{}
	// Renewal requests through the device twin (under mu).
	renewRequest renewRequest
}

// New checks the options and prepares an agent.
func New(opts Options) (*Agent, error) {
	switch {
	case opts.Keys == nil:
		return nil, errors.New("agent: Keys is required")
	case opts.Store == nil:
		return nil, errors.New("agent: Store is required")
	case opts.Registrar == nil:
		return nil, errors.New("agent: Registrar is required")
	case opts.Hub == nil:
		return nil, errors.New("agent: Hub is required")
	case opts.Config.RegistrationID == "":
		return nil, errors.New("agent: the registration ID is empty")
	}
	a := &Agent{cfg: opts.Config, opts: opts, clock: opts.Clock, log: opts.Logger, rand: opts.Rand, renewNow: make(chan struct{}, 1)}
	if a.clock == nil {
		a.clock = realClock{}
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if a.rand == nil {
		a.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if a.cfg.KeyAlgorithm == "" {
		a.cfg.KeyAlgorithm = keys.Auto
	}
	a.status = Status{State: StateStarting, RegistrationID: a.cfg.RegistrationID, IDScope: a.cfg.IDScope}
	return a, nil
}

// Run holds a working identity until ctx ends: it provisions when there is
// none (or the hub refuses the one it has), connects to the assigned hub, and
// reconnects. It returns nil when ctx ends, or an error only for failures no
// retry can fix (the state directory became unusable).
func (a *Agent) Run(ctx context.Context) error {
	forceProvision := false
	refusals := 0 // hub refusals in a row, each followed by a registration
	for ctx.Err() == nil {
		if refusals > 1 {
			// DPS keeps assigning an identity the hub refuses: register again,
			// but not in a loop that hammers both services.
			wait := a.backoff(refusals-1, refusedMin, refusedMax, 0)
			a.log.Warn("the hub refused several fresh identities in a row; waiting before registering again", zap.Int("refusals", refusals), zap.Duration("retry_in", wait))
			if !a.sleep(ctx, wait) {
				return nil
			}
		}
		id, err := a.identity(ctx, forceProvision)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		forceProvision = false
		connected, err := a.hold(ctx, id)
		if connected {
			refusals = 0
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case unauthorized(err):
			refusals++
			a.log.Warn("the hub refused this identity (revoked, deleted or moved); registering again with DPS", zap.Error(err))
			a.recordError(err, "re-provisioning through DPS with the onboarding credential")
			forceProvision = true
		case err != nil:
			a.log.Warn("hub session ended", zap.Error(err))
		}
	}
	return nil
}

// SetHeartbeat sets Options.Heartbeat before Run.
func (a *Agent) SetHeartbeat(fn func()) { a.opts.Heartbeat = fn }

// HeartbeatInterval is how often a live agent calls Options.Heartbeat.
const HeartbeatInterval = 30 * time.Second

func (a *Agent) beat() {
	if a.opts.Heartbeat != nil {
		a.opts.Heartbeat()
	}
}

// sleep waits d or until ctx ends, beating meanwhile; it reports whether the
// wait completed.
func (a *Agent) sleep(ctx context.Context, d time.Duration) bool {
	done := a.clock.After(d)
	beat := time.NewTicker(HeartbeatInterval)
	defer beat.Stop()
	for {
		a.beat()
		select {
		case <-ctx.Done():
			return false
		case <-done:
			return true
		case <-beat.C:
		}
	}
}

// backoff is the wait before attempt n (1-based): exponential with full jitter
// between min and max, never shorter than the cloud's retry-after.
func (a *Agent) backoff(n int, min, max, retryAfter time.Duration) time.Duration {
	ceiling := max
	if n < 30 && min<<n < max {
		ceiling = min << n
	}
	a.randMu.Lock()
	d := min + time.Duration(a.rand.Int64N(int64(ceiling-min)+1))
	a.randMu.Unlock()
	if retryAfter > d {
		d = retryAfter
	}
	return d
}
