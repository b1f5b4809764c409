package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/mqtt/dps"
	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// clientVersion identifies dpsagent to DPS and the hub.
func clientVersion() string { return "dpsagent/" + version }

// daemon is everything a running agent is wired from.
type daemon struct {
	cfg   *Config
	keys  keys.Backend
	store *store.Store
	agent *agent.Agent
}

func (d *daemon) Close() {
	if d.store != nil {
		_ = d.store.Close()
	}
	if d.keys != nil {
		_ = d.keys.Close()
	}
}

// wire opens the key backend and the state directory and builds the agent.
func (c *cli) wire(cfg *Config, log *zap.Logger, onStatus func(agent.Status)) (*daemon, error) {
	d := &daemon{cfg: cfg}
	var err error
	if d.keys, err = openKeys(cfg, log); err != nil {
		return nil, err
	}
	d.store, err = store.Open(cfg.Advanced.StateDir, store.Options{Logger: log.Named("store"), Hook: killPointStoreHook()})
	if err != nil {
		d.Close()
		code := exitFailure
		if errors.Is(err, store.ErrLocked) {
			code = exitConfig
		}
		return nil, withCode(code, err)
	}
	registrar, err := newRegistrar(cfg, d.keys, log)
	if err != nil {
		d.Close()
		return nil, err
	}
	hub, err := newHubConnector(cfg, log)
	if err != nil {
		d.Close()
		return nil, err
	}
	policy, _ := cfg.renewalPolicy() // validated with the configuration
	alg, _ := keys.ParseAlgorithm(cfg.Advanced.KeyAlgorithm)
	opts := agent.Options{
		Config:    agent.Config{IDScope: cfg.IDScope, RegistrationID: cfg.RegistrationID, KeyAlgorithm: alg, Renewal: policy, SAS: cfg.Identity == IdentitySAS},
		Keys:      d.keys,
		Store:     d.store,
		Registrar: registrar,
		Hub:       hub,
		Logger:    log,
		Version:   version,
		BuildDate: buildTime(),
		OnStatus:  onStatus,
	}
	if hook := cfg.Advanced.Renewal.Hook; hook != "" {
		opts.AfterRenewal = renewalHook(hook, runtimeDir(cfg), log.Named("hook"))
	}
	d.agent, err = agent.New(opts)
	if err != nil {
		d.Close()
		return nil, withCode(exitConfig, err)
	}
	return d, nil
}

// runtimeDir is where files for other programs go: systemd's RuntimeDirectory
// when set, else the state directory.
func runtimeDir(cfg *Config) string {
	if dir := os.Getenv("RUNTIME_DIRECTORY"); dir != "" {
		return strings.Split(dir, ":")[0]
	}
	return cfg.Advanced.StateDir
}

func buildTime() time.Time {
	t, err := time.Parse(time.RFC3339, buildDate)
	if err != nil {
		return time.Time{}
	}
	return t
}

// openKeys opens the TPM, or the software backend when the configuration
// explicitly says tpm: none (never silently).
func openKeys(cfg *Config, log *zap.Logger) (keys.Backend, error) {
	if cfg.Advanced.TPM == "none" {
		log.Warn("advanced.tpm is none: keys are kept in files, not in a TPM; use this only on devices without one")
		return &softkey.Backend{}, nil
	}
	t, err := tpm.Open(cfg.Advanced.TPM, tpm.Options{Logger: log.Named("tpm"), BeforeCommand: killPointTPMHook()})
	switch {
	case errors.Is(err, tpm.ErrBadSpec):
		return nil, withCode(exitConfig, fmt.Errorf("advanced.tpm: %w", err))
	case err != nil:
		return nil, withCode(exitTPM, err)
	}
	return t, nil
}

// registrar adapts the DPS client to the agent.
type registrar struct{ c *dps.Client }

func (r registrar) Register(ctx context.Context, csr []byte) (*agent.Registration, error) {
	res, err := r.c.Register(ctx, csr, nil)
	if err != nil {
		return nil, err
	}
	return &agent.Registration{
		OperationID: res.OperationID, Status: res.Status, Substatus: res.Substatus,
		AssignedHub: res.AssignedHub, DeviceID: res.DeviceID, Chain: res.IssuedCertificateChain,
	}, nil
}

func newRegistrar(cfg *Config, backend keys.Backend, log *zap.Logger) (agent.Registrar, error) {
	auth, err := onboardingAuth(cfg, backend)
	if err != nil {
		return nil, err
	}
	c, err := dps.New(dps.Options{
		Endpoint:        cfg.Advanced.DPSEndpoint,
		IDScope:         cfg.IDScope,
		RegistrationID:  cfg.RegistrationID,
		Auth:            auth,
		TrustBundleFile: cfg.Advanced.TrustBundleFile,
		ClientVersion:   clientVersion(),
		Logger:          log.Named("dps"),
	})
	if err != nil {
		return nil, withCode(exitConfig, err)
	}
	return registrar{c}, nil
}

// onboardingAuth builds the DPS credential from the configuration.
func onboardingAuth(cfg *Config, backend keys.Backend) (dps.Auth, error) {
	if cfg.Onboarding.Method == OnboardSymmetricKey {
		key, err := cfg.onboardingKey()
		if err != nil {
			return dps.Auth{}, withCode(exitConfig, err)
		}
		if cfg.Onboarding.GroupKey {
			return dps.GroupKey(key), nil
		}
		return dps.SymmetricKey(key), nil
	}
	chain, err := readCertificates(cfg.Onboarding.X509.CertificateFile)
	if err != nil {
		return dps.Auth{}, withCode(exitConfig, fmt.Errorf("onboarding.x509.certificate_file: %w", err))
	}
	key, err := loadBirthKey(cfg.Onboarding.X509.Key, backend)
	if err != nil {
		return dps.Auth{}, err
	}
	return dps.X509(key, chain), nil
}

// readCertificates reads a PEM chain as DER, in file order. Every CERTIFICATE
// block must parse, as the service's trust pool requires of a bundle, and as
// DPS requires of each certificate presented in the handshake.
func readCertificates(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return nil, fmt.Errorf("certificate %d in %s does not parse: %w", len(chain)+1, path, err)
			}
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return chain, nil
}

// loadBirthKey reads onboarding.x509.key: tpm-blob:PATH (a key made by
// `dpsagent birth-key`) or file:PATH (a PKCS#8 file, mode 0600).
func loadBirthKey(spec string, backend keys.Backend) (keys.Key, error) {
	switch {
	case strings.HasPrefix(spec, "file:"):
		k, err := softkey.LoadFile(strings.TrimPrefix(spec, "file:"))
		if err != nil {
			return nil, withCode(exitConfig, fmt.Errorf("onboarding.x509.key: %w", err))
		}
		return k, nil
	case strings.HasPrefix(spec, "tpm-blob:"):
		path := strings.TrimPrefix(spec, "tpm-blob:")
		blob, err := os.ReadFile(path)
		if err != nil {
			return nil, withCode(exitConfig, fmt.Errorf("onboarding.x509.key: %w", err))
		}
		k, err := backend.LoadKey(blob)
		if err != nil {
			return nil, withCode(exitTPM, fmt.Errorf("onboarding.x509.key %s: %w", path, err))
		}
		return k, nil
	}
	return nil, withCode(exitConfig, fmt.Errorf("onboarding.x509.key %q: persistent TPM handles (tpm:) are not supported yet; use tpm-blob:PATH from `dpsagent birth-key`", spec))
}
