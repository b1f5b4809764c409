package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// identity is a usable identity: the stored record, its key and its chain.
type identity struct {
	rec   store.Identity
	key   keys.Key
	chain [][]byte // DER, leaf first
	leaf  *x509.Certificate
	tls   tls.Certificate
	// fresh: issued by DPS in this run, so newer than any renewal request
	// in the twin.
	fresh bool
}

// Provisioning backoff: a retryable failure (network, throttling, 5xx) is
// retried from a few seconds up to 5 minutes; a refusal (enrollment,
// credential, CSR) from a minute up to an hour, so an operator's fix is picked
// up without the agent hammering the service in between.
const (
	retryMin   = 2 * time.Second
	retryMax   = 5 * time.Minute
	refusedMin = time.Minute
	refusedMax = time.Hour
)

// identity returns the stored identity when it is usable and force is false;
// otherwise it provisions one, retrying until it succeeds or ctx ends.
func (a *Agent) identity(ctx context.Context, force bool) (*identity, error) {
	m, err := a.opts.Store.Load()
	var corrupt *store.CorruptError
	switch {
	case errors.As(err, &corrupt):
		a.log.Warn("the state directory's manifest was unreadable and was set aside; provisioning afresh", zap.Error(err))
	case err != nil:
		return nil, fmt.Errorf("read the state directory: %w", err)
	}
	if m.Next != nil {
		// A renewal was interrupted between staging and the switch. The
		// current identity is complete; renewal will run again when due.
		a.log.Info("discarding a renewed identity staged before a restart; the current one stays", zap.String("serial", m.Next.Serial))
		if err := a.opts.Store.DiscardNext(); err != nil {
			return nil, fmt.Errorf("discard the staged identity: %w", err)
		}
	}
	if m.Current != nil && !force {
		id, err := a.loadIdentity(*m.Current)
		if err == nil {
			a.log.Info("using the stored identity; not registering again",
				zap.String("device_id", id.rec.DeviceID), zap.String("hub", id.rec.AssignedHub), zap.Time("valid_until", id.rec.NotAfter))
			a.showIdentity(id)
			return id, nil
		}
		a.log.Warn("the stored identity cannot be used; provisioning a new one", zap.Error(err))
		a.recordError(err, "provisioning a new identity through DPS")
	} else if m.Current == nil {
		a.setState(StateUnprovisioned)
	}
	for attempt := 1; ; attempt++ {
		id, err := a.provision(ctx)
		if err == nil {
			id.fresh = true
			return id, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		min, max := retryMin, retryMax
		if !Retryable(err) {
			min, max = refusedMin, refusedMax
		}
		wait := a.backoff(attempt, min, max, retryAfter(err))
		a.log.Warn("provisioning failed; will try again", zap.Error(err), zap.String("hint", Hint(err)), zap.Duration("retry_in", wait))
		a.recordError(err, "the agent retries on its own")
		a.setState(StateError)
		if !a.sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// loadIdentity rebuilds a stored identity and checks it is still one: the key
// loads, the chain parses, the leaf is for the key and has not expired.
func (a *Agent) loadIdentity(rec store.Identity) (*identity, error) {
	if sas := rec.KeyStorage == store.StorageSAS; sas != a.cfg.SAS {
		return nil, fmt.Errorf("the stored identity is of the other mode (sas: %v) than the configuration's", sas)
	}
	if a.cfg.SAS {
		return &identity{rec: rec}, nil
	}
	blob, err := a.opts.Store.ReadFile(rec.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read the key: %w", err)
	}
	key, err := a.opts.Keys.LoadKey(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: load the key: %w", ErrKeys, err)
	}
	pemChain, err := a.opts.Store.ReadFile(rec.ChainFile)
	if err != nil {
		return nil, fmt.Errorf("read the certificate chain: %w", err)
	}
	chain, err := decodeChain(pemChain)
	if err != nil {
		return nil, err
	}
	// The chain was verified before it was stored; here it is enough that it
	// still belongs to this key and is still valid.
	v, err := VerifyIssuedChain(chain, key.Public(), rec.RegistrationID, a.clock.Now())
	if err != nil {
		return nil, err
	}
	return a.newIdentity(rec, key, v)
}

func (a *Agent) newIdentity(rec store.Identity, key keys.Key, v *VerifiedChain) (*identity, error) {
	cert, err := keys.TLSCertificate(key, v.DER())
	if err != nil {
		return nil, err
	}
	return &identity{rec: rec, key: key, chain: v.DER(), leaf: v.Leaf, tls: cert}, nil
}

// provision makes a new key, registers it with DPS through a CSR, checks the
// issued chain and commits the identity. Nothing is committed unless every
// check passed; the previous identity, if any, stays until the commit.
func (a *Agent) provision(ctx context.Context) (*identity, error) {
	a.setState(StateProvisioning)
	if a.cfg.SAS {
		return a.provisionSAS(ctx)
	}
	a.log.Info("creating a key for this device", zap.String("algorithm", string(a.cfg.KeyAlgorithm)))
	key, err := a.opts.Keys.CreateKey(a.cfg.KeyAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("%w: create key: %w", ErrKeys, err)
	}
	csr, err := keys.NewCSR(key, a.cfg.RegistrationID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeys, err)
	}
	a.log.Info("registering with DPS and asking for a certificate", zap.String("registration_id", a.cfg.RegistrationID), zap.String("id_scope", a.cfg.IDScope))
	reg, err := a.opts.Registrar.Register(ctx, csr)
	if err != nil {
		return nil, err // the registrar's error names the registration and DPS
	}
	v, err := VerifyIssuedChain(reg.Chain, key.Public(), a.cfg.RegistrationID, a.clock.Now())
	if err != nil {
		return nil, err
	}
	now := a.clock.Now().UTC()
	rec := store.Identity{
		KeyAlgorithm:   store.KeyAlgorithm(key.Algorithm()),
		KeyStorage:     store.KeyStorage(key.Storage()),
		RegistrationID: a.cfg.RegistrationID,
		DeviceID:       reg.DeviceID,
		AssignedHub:    reg.AssignedHub,
		ProvisionedAt:  now,
		Path:           store.PathDPS,
	}
	rec.SetCertificate(v.Leaf)
	if err := a.commitIdentity(&rec, key, v, &store.Registration{At: now, OperationID: reg.OperationID, Status: reg.Status, Substatus: reg.Substatus}); err != nil {
		return nil, err
	}
	a.log.Info("provisioned: certificate issued and stored",
		zap.String("device_id", rec.DeviceID), zap.String("hub", rec.AssignedHub), zap.String("serial", rec.Serial),
		zap.Time("valid_until", rec.NotAfter), zap.String("key", string(rec.KeyAlgorithm)+" in "+string(rec.KeyStorage)))
	id, err := a.newIdentity(rec, key, v)
	if err != nil {
		return nil, err
	}
	a.showIdentity(id)
	return id, nil
}

// commitIdentity writes the key blob and chain, then commits the manifest
// naming them as current. A failure before the commit removes what it wrote.
func (a *Agent) commitIdentity(rec *store.Identity, key keys.Key, v *VerifiedChain, reg *store.Registration) error {
	keyFile, err := a.opts.Store.WriteBlob("key-*.blob", key.Blob())
	if err != nil {
		return fmt.Errorf("store the key: %w", err)
	}
	chainFile, err := a.opts.Store.WriteBlob("chain-*.pem", encodeChain(v.DER()))
	if err != nil {
		_ = a.opts.Store.RemoveBlob(keyFile)
		return fmt.Errorf("store the certificate chain: %w", err)
	}
	rec.KeyFile, rec.ChainFile = keyFile, chainFile
	err = a.opts.Store.Update(func(m *store.Manifest) error {
		m.IDScope = a.cfg.IDScope
		m.Current = rec
		m.Next = nil
		if reg != nil {
			m.LastRegistration = reg
		}
		m.LastError = nil
		return nil
	})
	if err != nil {
		_ = a.opts.Store.RemoveBlob(keyFile)
		_ = a.opts.Store.RemoveBlob(chainFile)
		return fmt.Errorf("commit the new identity: %w", err)
	}
	return nil
}

// provisionSAS registers without a CSR, for the legacy mode.
func (a *Agent) provisionSAS(ctx context.Context) (*identity, error) {
	a.log.Warn("identity: sas is the legacy mode (the symmetric key goes to the hub); an X.509 identity held in the TPM is the goal")
	reg, err := a.opts.Registrar.Register(ctx, nil)
	if err != nil {
		return nil, err // the registrar's error names the registration and DPS
	}
	now := a.clock.Now().UTC()
	rec := store.Identity{
		KeyStorage: store.StorageSAS, RegistrationID: a.cfg.RegistrationID,
		DeviceID: reg.DeviceID, AssignedHub: reg.AssignedHub, ProvisionedAt: now, Path: store.PathDPS,
	}
	err = a.opts.Store.Update(func(m *store.Manifest) error {
		m.IDScope, m.Current, m.Next, m.LastError = a.cfg.IDScope, &rec, nil, nil
		m.LastRegistration = &store.Registration{At: now, OperationID: reg.OperationID, Status: reg.Status, Substatus: reg.Substatus}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("commit the new identity: %w", err)
	}
	a.log.Info("provisioned (sas mode)", zap.String("device_id", rec.DeviceID), zap.String("hub", rec.AssignedHub))
	id := &identity{rec: rec}
	a.showIdentity(id)
	return id, nil
}

func (a *Agent) showIdentity(id *identity) {
	if id.leaf == nil {
		a.updateStatus(func(s *Status) {
			s.DeviceID, s.AssignedHub, s.Certificate, s.LastError = id.rec.DeviceID, id.rec.AssignedHub, nil, nil
		})
		return
	}
	a.updateStatus(func(s *Status) {
		s.DeviceID, s.AssignedHub = id.rec.DeviceID, id.rec.AssignedHub
		s.Certificate = &CertificateStatus{
			Subject: id.leaf.Subject.String(), Issuer: id.leaf.Issuer.String(), Serial: id.rec.Serial,
			NotBefore: id.leaf.NotBefore.UTC(), NotAfter: id.leaf.NotAfter.UTC(),
			KeyAlgorithm: string(id.rec.KeyAlgorithm), KeyStorage: string(id.rec.KeyStorage),
		}
		s.LastError = nil
	})
}

func encodeChain(chain [][]byte) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return out
}

// DecodeChain reads a stored chain file (PEM, leaf first) as DER.
func DecodeChain(data []byte) ([][]byte, error) { return decodeChain(data) }

func decodeChain(data []byte) ([][]byte, error) {
	var chain [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("the stored certificate chain holds no certificate")
	}
	return chain, nil
}
