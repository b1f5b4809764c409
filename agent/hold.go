package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Hub reconnection when the connection cannot be opened at all: the session
// itself reconnects after drops; this covers the first connection.
const (
	connectMin = time.Second
	connectMax = 5 * time.Minute
)

// MethodRenewCertificate is the direct method that asks for a renewal.
const MethodRenewCertificate = "renewCertificate"

// hold connects to the identity's hub and keeps the session until ctx ends or
// the hub refuses the identity (then the error says so, for Run to go back to DPS).
func (a *Agent) hold(ctx context.Context, id *identity) error {
	var certMu sync.Mutex
	current := id.tls
	refused := make(chan error, 1)
	connected := make(chan struct{}, 1)
	target := HubTarget{
		Host:     id.rec.AssignedHub,
		DeviceID: id.rec.DeviceID,
		Certificate: func() (*tls.Certificate, error) {
			certMu.Lock()
			defer certMu.Unlock()
			c := current
			return &c, nil
		},
		OnMethod:  a.onMethod,
		OnDesired: a.onDesired,
		OnConnection: func(up bool, err error) {
			a.onConnection(up, err)
			if up {
				select {
				case connected <- struct{}{}:
				default:
				}
			} else if unauthorized(err) {
				select {
				case refused <- err:
				default:
				}
			}
		},
	}
	var sess HubSession
	for attempt := 1; ; attempt++ {
		var err error
		sess, err = a.opts.Hub.Connect(ctx, target)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if unauthorized(err) {
			return err
		}
		wait := a.backoff(attempt, connectMin, connectMax, retryAfter(err))
		a.log.Warn("cannot connect to the hub; retrying the same hub", zap.String("hub", id.rec.AssignedHub), zap.Error(err), zap.Duration("retry_in", wait))
		a.recordError(fmt.Errorf("connect to %s: %w", id.rec.AssignedHub, err), "check the network path to the hub (port 8883); the agent keeps retrying")
		a.setState(StateDisconnected)
		if !a.sleep(ctx, wait) {
			return nil
		}
	}
	defer sess.Close()
	a.onConnection(true, nil)
	a.report(ctx, sess, id)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-refused:
			return err
		case <-connected:
			// Reported properties are part of the device's state; say them
			// again after every reconnection.
			a.report(ctx, sess, id)
		}
	}
}

func (a *Agent) onConnection(up bool, err error) {
	now := a.clock.Now().UTC()
	a.updateStatus(func(s *Status) {
		if up && !s.Connected {
			s.ConnectedSince = now
		}
		s.Connected = up
		if up {
			s.State = StateConnected
		} else {
			s.State = StateDisconnected
		}
	})
	if up {
		a.log.Info("connected to the hub")
	} else {
		a.log.Warn("disconnected from the hub", zap.Error(err))
	}
}

// report sends the certificate facts in the shape Microsoft suggests for
// expiry tracking, and the agent's own facts.
func (a *Agent) report(ctx context.Context, sess HubSession, id *identity) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := sess.UpdateReported(ctx, reportedProperties(id, a.opts.Version)); err != nil {
		a.log.Warn("could not update reported properties", zap.Error(err))
	}
}

func reportedProperties(id *identity, version string) map[string]any {
	return map[string]any{
		"certificate": map[string]any{
			"validFrom":    id.leaf.NotBefore.UTC().Format(time.RFC3339),
			"validUntil":   id.leaf.NotAfter.UTC().Format(time.RFC3339),
			"serialNumber": id.rec.Serial,
			"issuer":       id.leaf.Issuer.CommonName,
			"keyAlgorithm": string(id.rec.KeyAlgorithm),
			"keyStorage":   string(id.rec.KeyStorage),
		},
		"dpsAgent": map[string]any{
			"version":     version,
			"lastRenewal": nil,
		},
	}
}

// onMethod answers direct methods. renewCertificate answers with the current
// certificate state.
func (a *Agent) onMethod(_ context.Context, name string, _ []byte) (int, []byte) {
	if name != MethodRenewCertificate {
		body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("unknown method %q", name)})
		return 404, body
	}
	st := a.Status()
	resp := map[string]any{"state": st.State}
	if c := st.Certificate; c != nil {
		resp["certificate"] = map[string]any{
			"serialNumber": c.Serial,
			"validFrom":    c.NotBefore.Format(time.RFC3339),
			"validUntil":   c.NotAfter.Format(time.RFC3339),
		}
	}
	body, _ := json.Marshal(resp)
	return 200, body
}

// onDesired watches dpsAgent.renewRequestId; a new value asks for a renewal.
func (a *Agent) onDesired(patch map[string]any, version int) {
	agentProps, _ := patch["dpsAgent"].(map[string]any)
	if id, ok := agentProps["renewRequestId"].(string); ok {
		a.log.Info("renewal requested through the device twin", zap.String("renew_request_id", id), zap.Int("desired_version", version))
	}
}
