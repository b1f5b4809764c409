package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent/renewal"
	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// Renew asks for a renewal now (SIGHUP, `dpsagent renew`, the renewCertificate
// method, a new dpsAgent.renewRequestId). It does not wait for the result.
func (a *Agent) Renew() {
	select {
	case a.renewNow <- struct{}{}:
	default: // one is already pending
	}
}

// Schedule is the renewal decision for leaf at now: the same function the
// agent uses, so `dpsagent status` shows the daemon's plan even when it is
// not running.
func Schedule(cfg Config, leaf *x509.Certificate, now, buildDate time.Time) renewal.Decision {
	v := renewal.Validity{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
	// The draw is stable per device and certificate, so every check agrees on
	// the time, and a fleet issued in one second spreads over the jitter window.
	seed := sha256.Sum256([]byte(cfg.IDScope + "/" + cfg.RegistrationID))
	return renewal.Decide(v, now, cfg.Renewal, renewal.DrawFor(seed[:], leaf.Raw), buildDate)
}

// decide computes, from the wall clock every time, what to do about id.
func (a *Agent) decide(id *identity) renewal.Decision {
	d := Schedule(a.cfg, id.leaf, a.clock.Now(), a.opts.BuildDate)
	a.updateStatus(func(s *Status) {
		s.NextRenewal, s.NextRenewalReason = d.At.UTC(), d.Reason
		if d.Action == renewal.WaitForClock {
			s.State = StateWaitingForClock
		} else if s.State == StateWaitingForClock {
			s.State = StateConnected
		}
	})
	return d
}

// renewed is a verified, staged identity waiting to be tried.
type renewed struct {
	id   *identity
	path store.Path
}

// obtain gets a certificate for a new key: the hub credential API first (when
// connected and the certificate is valid), DPS when that fails or viaDPS says
// the certificate has expired. The result is verified and staged as next.
func (a *Agent) obtain(ctx context.Context, sess HubSession, current *identity, viaDPS bool) (*renewed, error) {
	key, err := a.opts.Keys.CreateKey(a.cfg.KeyAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("create the new key: %w", err)
	}
	csr, err := keys.NewCSR(key, a.cfg.RegistrationID)
	if err != nil {
		return nil, err
	}
	rec := current.rec
	rec.KeyAlgorithm, rec.KeyStorage = store.KeyAlgorithm(key.Algorithm()), store.KeyStorage(key.Storage())
	var (
		v   *VerifiedChain
		reg *Registration
	)
	if !viaDPS && sess != nil {
		a.log.Info("renewing through the hub's credential API", zap.String("algorithm", string(key.Algorithm())))
		chain, herr := sess.IssueCertificate(ctx, csr)
		if herr == nil {
			v, herr = VerifyIssuedChain(chain, key.Public(), a.cfg.RegistrationID, a.clock.Now())
		}
		if herr == nil {
			rec.Path = store.PathHub
		} else {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			a.log.Warn("the hub's credential API did not renew the certificate; registering with DPS instead", zap.Error(herr), zap.String("hint", Hint(herr)))
		}
	}
	if v == nil {
		a.log.Info("renewing through DPS with the onboarding credential")
		reg, err = a.opts.Registrar.Register(ctx, csr)
		if err != nil {
			return nil, fmt.Errorf("renew through DPS: %w", err)
		}
		if v, err = VerifyIssuedChain(reg.Chain, key.Public(), a.cfg.RegistrationID, a.clock.Now()); err != nil {
			return nil, err
		}
		rec.Path, rec.DeviceID, rec.AssignedHub = store.PathDPS, reg.DeviceID, reg.AssignedHub
	}
	rec.ProvisionedAt = a.clock.Now().UTC()
	rec.SetCertificate(v.Leaf)
	if err := a.stage(&rec, key, v); err != nil {
		return nil, err
	}
	id, err := a.newIdentity(rec, key, v)
	if err != nil {
		_ = a.opts.Store.DiscardNext()
		return nil, err
	}
	if reg != nil {
		r := &store.Registration{At: rec.ProvisionedAt, OperationID: reg.OperationID, Status: reg.Status, Substatus: reg.Substatus}
		_ = a.opts.Store.Update(func(m *store.Manifest) error { m.LastRegistration = r; return nil })
	}
	return &renewed{id: id, path: rec.Path}, nil
}

// stage writes the new key and chain and commits them as next, beside current.
func (a *Agent) stage(rec *store.Identity, key keys.Key, v *VerifiedChain) error {
	keyFile, err := a.opts.Store.WriteBlob("key-*.blob", key.Blob())
	if err != nil {
		return fmt.Errorf("store the new key: %w", err)
	}
	chainFile, err := a.opts.Store.WriteBlob("chain-*.pem", encodeChain(v.DER()))
	if err != nil {
		_ = a.opts.Store.RemoveBlob(keyFile)
		return fmt.Errorf("store the new chain: %w", err)
	}
	rec.KeyFile, rec.ChainFile = keyFile, chainFile
	if err := a.opts.Store.StageNext(*rec); err != nil {
		_ = a.opts.Store.RemoveBlob(keyFile)
		_ = a.opts.Store.RemoveBlob(chainFile)
		return fmt.Errorf("stage the new identity: %w", err)
	}
	return nil
}

// noteRenewal records the outcome for status and the twin.
func (a *Agent) noteRenewal(result string, path store.Path) {
	r := &RenewalResult{At: a.clock.Now().UTC(), Result: result, Path: string(path)}
	a.updateStatus(func(s *Status) { s.LastRenewal = r })
}

// errRenewalRefused is returned when the hub will not take the new identity.
var errRenewalRefused = errors.New("the hub refused the renewed identity")

// renewalRetry is the wait after a failed renewal: backoff within the
// certificate's lifetime, the cloud's retry-after always winning.
func (a *Agent) renewalRetry(id *identity, attempt int, err error) time.Duration {
	v := renewal.Validity{NotBefore: id.leaf.NotBefore, NotAfter: id.leaf.NotAfter}
	a.randMu.Lock()
	defer a.randMu.Unlock()
	return renewal.NextRetry(v, a.clock.Now(), attempt, retryAfter(err), a.rand).Delay
}
