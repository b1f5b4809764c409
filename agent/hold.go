package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

// Hub reconnection when the connection cannot be opened at all: the session
// itself reconnects after drops; this covers opening it.
const (
	connectMin = time.Second
	connectMax = 5 * time.Minute
)

// MethodRenewCertificate is the direct method that asks for a renewal.
const MethodRenewCertificate = "renewCertificate"

// session is a hub session with the events its callbacks deliver.
type session struct {
	HubSession
	connected chan struct{}
	refused   chan error
}

// hold keeps id connected to its hub and renews it when due, until ctx ends or
// the hub refuses the identity (the error then says so, for Run to go back to
// DPS with the onboarding credential). connected says whether the hub ever
// accepted the identity.
func (a *Agent) hold(ctx context.Context, id *identity) (connected bool, err error) {
	s, err := a.connect(ctx, id)
	if s == nil {
		return false, err
	}
	defer func() { s.Close() }()
	a.syncRenewRequest(ctx, s, id)
	a.report(ctx, s, id)

	attempt := 0
	var retryAt time.Time // after a failed renewal, not before this
	beat := time.NewTicker(HeartbeatInterval)
	defer beat.Stop()
	for {
		a.beat()
		var (
			d     renewal.Decision
			due   bool
			timer <-chan time.Time // nil in sas mode: nothing to renew
		)
		if id.leaf != nil {
			d = a.decide(id)
			due = d.Action == renewal.Renew || d.Action == renewal.RenewViaDPS
			// A twin request whose renewal failed is tried again on the
			// renewal backoff, like a due renewal (the first try came through
			// renewNow).
			due = due || (!retryAt.IsZero() && a.renewRequestPending())
			wait := d.RecheckIn
			if due {
				wait = max(0, retryAt.Sub(a.clock.Now()))
			}
			timer = a.clock.After(wait)
		}
		forced := false
		select {
		case <-ctx.Done():
			return true, nil
		case err := <-s.refused:
			return true, err
		case <-s.connected:
			// Reported properties are part of the device's state; say them
			// again after every reconnection.
			a.report(ctx, s, id)
			continue
		case <-beat.C:
			continue
		case <-a.renewNow:
			if id.leaf == nil {
				a.log.Warn("renewal requested, but in sas mode there is no certificate to renew")
				continue
			}
			forced = true
			a.log.Info("renewal requested")
		case <-timer:
			if !due {
				continue // recompute from the wall clock: gateways sleep and clocks jump
			}
		}
		if d.Action == renewal.WaitForClock && forced {
			a.log.Warn("renewal requested, but the clock is not set yet; waiting for time synchronisation")
			continue
		}
		a.log.Info("renewing the certificate", zap.String("why", renewReason(forced, d)))
		a.setState(StateRenewing)
		r, err := a.obtain(ctx, s, id, d.Action == renewal.RenewViaDPS)
		if err == nil {
			var next *session
			next, err = a.switchTo(ctx, s, r)
			if next != nil {
				s, id, attempt, retryAt = next, r.id, 0, time.Time{}
				a.noteRenewal("success", r.path)
				a.renewedForRequest()
				a.showIdentity(id)
				a.setState(StateConnected)
				a.report(ctx, s, id)
				a.afterRenewal(ctx, id)
				continue
			}
			if ctx.Err() != nil {
				return true, nil
			}
			// The hub refused the new identity; the old one is back in place.
			s, err = a.reconnectAfterSwitch(ctx, id, err)
			if s == nil {
				return true, err
			}
		}
		if ctx.Err() != nil {
			return true, nil
		}
		attempt++
		delay := a.renewalRetry(id, attempt, err)
		retryAt = a.clock.Now().Add(delay)
		a.noteRenewal("failure", "")
		a.log.Warn("renewal failed; keeping the current certificate and trying again", zap.Error(err), zap.String("hint", Hint(err)), zap.Duration("retry_in", delay))
		a.recordError(err, "the agent keeps the current certificate and retries")
		a.setState(StateConnected)
	}
}

// hookTimeout bounds the administrator's hook, which runs in the renewal path.
const hookTimeout = time.Minute

func (a *Agent) afterRenewal(ctx context.Context, id *identity) {
	if a.opts.AfterRenewal == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	err := a.opts.AfterRenewal(ctx, Renewed{
		DeviceID: id.rec.DeviceID, AssignedHub: id.rec.AssignedHub, Serial: id.rec.Serial,
		NotBefore: id.leaf.NotBefore.UTC(), NotAfter: id.leaf.NotAfter.UTC(),
		KeyAlgorithm: string(id.rec.KeyAlgorithm), KeyStorage: string(id.rec.KeyStorage),
		Path: string(id.rec.Path), ChainPEM: encodeChain(id.chain),
	})
	if err != nil {
		a.log.Warn("the after-renewal hook failed; the renewal itself succeeded", zap.Error(err))
	}
}

func renewReason(forced bool, d renewal.Decision) string {
	if forced {
		return "requested"
	}
	return d.Reason
}

// switchTo moves the connection to the renewed identity: close the session,
// connect with the new certificate, and promote it only once the hub accepts
// it. On refusal the staged identity is discarded.
func (a *Agent) switchTo(ctx context.Context, old *session, r *renewed) (*session, error) {
	a.log.Info("reconnecting with the renewed certificate", zap.String("serial", r.id.rec.Serial), zap.String("hub", r.id.rec.AssignedHub))
	_ = old.Close()
	s, err := a.connectOnce(ctx, r.id)
	if err != nil {
		_ = a.opts.Store.DiscardNext()
		return nil, fmt.Errorf("%w: %w", errRenewalRefused, err)
	}
	if err := a.opts.Store.PromoteNext(); err != nil {
		// The new identity works but could not be committed: keep using it
		// for this session; at the next start the staged identity is retried.
		a.log.Error("could not commit the renewed identity", zap.Error(err))
	}
	a.log.Info("renewed: now connected with the new certificate", zap.String("serial", r.id.rec.Serial), zap.Time("valid_until", r.id.leaf.NotAfter))
	return s, nil
}

// reconnectAfterSwitch goes back to the current identity after the hub refused
// the renewed one.
func (a *Agent) reconnectAfterSwitch(ctx context.Context, id *identity, cause error) (*session, error) {
	a.log.Warn("the hub did not accept the renewed certificate; reconnecting with the current one", zap.Error(cause))
	s, err := a.connect(ctx, id)
	if s == nil {
		return nil, err
	}
	return s, cause
}

// connect opens a session for id, retrying network failures with backoff.
// It returns a nil session when ctx ended or the hub refused the identity.
func (a *Agent) connect(ctx context.Context, id *identity) (*session, error) {
	for attempt := 1; ; attempt++ {
		s, err := a.connectOnce(ctx, id)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if unauthorized(err) {
			return nil, err
		}
		wait := a.backoff(attempt, connectMin, connectMax, retryAfter(err))
		a.log.Warn("cannot connect to the hub; retrying the same hub", zap.String("hub", id.rec.AssignedHub), zap.Error(err), zap.Duration("retry_in", wait))
		a.recordError(fmt.Errorf("connect to %s: %w", id.rec.AssignedHub, err), "check the network path to the hub (port 8883); the agent keeps retrying")
		a.setState(StateDisconnected)
		if !a.sleep(ctx, wait) {
			return nil, nil
		}
	}
}

func (a *Agent) connectOnce(ctx context.Context, id *identity) (*session, error) {
	s := &session{connected: make(chan struct{}, 1), refused: make(chan error, 1)}
	target := HubTarget{
		Host:      id.rec.AssignedHub,
		DeviceID:  id.rec.DeviceID,
		OnMethod:  a.onMethod,
		OnDesired: a.onDesired,
		OnConnection: func(up bool, err error) {
			a.onConnection(up, err)
			switch {
			case up:
				notify(s.connected, struct{}{})
			case unauthorized(err):
				notify(s.refused, err)
			}
		},
	}
	if id.leaf != nil {
		cert := id.tls
		target.Certificate = func() (*tls.Certificate, error) { c := cert; return &c, nil }
	}
	hs, err := a.opts.Hub.Connect(ctx, target)
	if err != nil {
		return nil, err
	}
	s.HubSession = hs
	// The first connection's event is not a reconnection.
	select {
	case <-s.connected:
	default:
	}
	a.onConnection(true, nil)
	return s, nil
}

func notify[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

func (a *Agent) onConnection(up bool, err error) {
	now := a.clock.Now().UTC()
	a.updateStatus(func(s *Status) {
		if up && !s.Connected {
			s.ConnectedSince = now
		}
		s.Connected = up
		switch {
		case up && s.State != StateRenewing:
			s.State = StateConnected
		case !up && s.State != StateRenewing:
			s.State = StateDisconnected
		}
	})
	if !up && err != nil {
		a.log.Warn("disconnected from the hub", zap.Error(err))
	}
}

// report sends the certificate facts in the shape Microsoft suggests for
// expiry tracking, and the agent's own facts.
func (a *Agent) report(ctx context.Context, s *session, id *identity) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	props := reportedProperties(id, a.opts.Version, a.Status().LastRenewal)
	if handled, ok := a.handledRenewRequest(); ok && id.leaf != nil {
		props["dpsAgent"].(map[string]any)["renewRequestId"] = handled
	}
	if _, err := s.UpdateReported(ctx, props); err != nil {
		a.log.Warn("could not update reported properties", zap.Error(err))
	}
}

func reportedProperties(id *identity, version string, last *RenewalResult) map[string]any {
	var lastRenewal any
	if last != nil {
		lastRenewal = map[string]any{"at": last.At.Format(time.RFC3339), "result": last.Result, "path": nullIfEmpty(last.Path)}
	}
	agentProps := map[string]any{"version": version, "lastRenewal": lastRenewal}
	if id.leaf == nil {
		agentProps["identity"] = "sas"
		return map[string]any{"certificate": nil, "dpsAgent": agentProps}
	}
	agentProps["identity"] = "x509"
	return map[string]any{
		"certificate": map[string]any{
			"validFrom":    id.leaf.NotBefore.UTC().Format(time.RFC3339),
			"validUntil":   id.leaf.NotAfter.UTC().Format(time.RFC3339),
			"serialNumber": id.rec.Serial,
			"issuer":       id.leaf.Issuer.CommonName,
			"keyAlgorithm": string(id.rec.KeyAlgorithm),
			"keyStorage":   string(id.rec.KeyStorage),
		},
		"dpsAgent": agentProps,
	}
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// onMethod answers direct methods. renewCertificate starts a renewal and
// answers with the certificate state at that moment.
func (a *Agent) onMethod(_ context.Context, name string, _ []byte) (int, []byte) {
	if name != MethodRenewCertificate {
		body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("unknown method %q", name)})
		return 404, body
	}
	a.Renew()
	st := a.Status()
	resp := map[string]any{"state": st.State, "renewal": "started"}
	if c := st.Certificate; c != nil {
		resp["certificate"] = map[string]any{
			"serialNumber": c.Serial,
			"validFrom":    c.NotBefore.Format(time.RFC3339),
			"validUntil":   c.NotAfter.Format(time.RFC3339),
		}
	}
	body, _ := json.Marshal(resp)
	return 202, body
}
