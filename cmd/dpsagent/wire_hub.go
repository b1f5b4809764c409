package main

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/mqtt/hub"
)

// hubConnector adapts mqtt/hub to the agent. In the legacy sas identity mode
// it authenticates with the device's symmetric key instead of a certificate.
type hubConnector struct {
	cfg    *Config
	log    *zap.Logger
	sasKey []byte
}

func newHubConnector(cfg *Config, log *zap.Logger) (agent.HubConnector, error) {
	h := hubConnector{cfg: cfg, log: log.Named("hub")}
	if cfg.Identity == IdentitySAS {
		key, err := cfg.deviceKey()
		if err != nil {
			return nil, withCode(exitConfig, err)
		}
		h.sasKey = key
	}
	return h, nil
}

func (h hubConnector) Connect(ctx context.Context, target agent.HubTarget) (agent.HubSession, error) {
	opts := hub.Options{
		Host:            target.Host,
		Port:            h.cfg.Advanced.HubPort,
		DeviceID:        target.DeviceID,
		UserAgent:       clientVersion(),
		TrustBundleFile: h.cfg.Advanced.TrustBundleFile,
		Logger:          h.log,
		OnMethod:        target.OnMethod,
		OnDesired:       target.OnDesired,
		OnConnectionChange: func(up bool, err error) {
			// The end of a session we closed ourselves is not news.
			if !up && errors.Is(err, hub.ErrClosed) {
				return
			}
			target.OnConnection(up, err)
		},
	}
	if target.Certificate != nil {
		opts.Auth.Certificate = target.Certificate
	} else {
		opts.Auth.SymmetricKey = h.sasKey
	}
	c, err := hub.New(opts)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}
