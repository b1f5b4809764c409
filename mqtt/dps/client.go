package dps

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
)

// Client registers one device with DPS. It is safe for concurrent use, but
// Register calls run one at a time: DPS allows one connection per
// registration ID, and a second would cut off the first.
type Client struct {
	opts  Options
	host  string // the TLS server name
	addr  string // host:port to dial
	roots *x509.CertPool
	log   *zap.Logger
	busy  chan struct{} // holds a token while a Register runs
}

// New checks opts and loads the trust pool. Configuration errors name the
// setting at fault.
func New(opts Options) (*Client, error) {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("DPS client: %w", err)
	}
	host, addr, err := mqtt.ParseEndpoint(opts.Endpoint, defaultPort)
	if err != nil {
		return nil, fmt.Errorf("DPS client: %w (advanced.dps_endpoint)", err)
	}
	roots, err := mqtt.TrustConfig{BundleFile: opts.TrustBundleFile}.Roots()
	if err != nil {
		return nil, fmt.Errorf("DPS client: %w", err)
	}
	return &Client{
		opts:  opts,
		host:  host,
		addr:  addr,
		roots: roots,
		log:   opts.Logger.Named("dps").With(zap.String("registration_id", opts.RegistrationID)),
		busy:  make(chan struct{}, 1),
	}, nil
}

// Register runs one registration: connect, send the register request with
// csr (PKCS#10 DER; nil for none) and payload (JSON for custom allocation;
// nil for none), poll until DPS assigns the device or ends the registration,
// and disconnect.
//
// Failures are *Error (see Retryable, RetryAfter and Hint), except bad
// arguments and the end of ctx, which return ctx's error.
func (c *Client) Register(ctx context.Context, csr []byte, payload json.RawMessage) (*Result, error) {
	regID := c.opts.RegistrationID
	body, err := registerBody(regID, csr, payload)
	if err != nil {
		return nil, fmt.Errorf("register %q with DPS: %w", regID, err)
	}
	select {
	case c.busy <- struct{}{}:
		defer func() { <-c.busy }()
	case <-ctx.Done():
		return nil, fmt.Errorf("register %q with DPS: %w", regID, ctx.Err())
	}
	opCtx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	s := newSession(opCtx, c)
	defer s.close()
	start := time.Now()
	res, err := s.register(body, len(csr) > 0)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = &Error{Kind: KindTimeout, Op: s.op, Message: fmt.Sprintf("the registration did not finish within %s", c.opts.Timeout)}
		}
		c.log.Info("registration failed", zap.String("op", s.op), zap.Duration("after", time.Since(start)), zap.Error(err))
		return nil, fmt.Errorf("register %q with DPS: %w", regID, err)
	}
	c.log.Info("registered",
		zap.String("assigned_hub", res.AssignedHub), zap.String("device_id", res.DeviceID),
		zap.String("substatus", res.Substatus), zap.Int("issued_certificates", len(res.IssuedCertificateChain)),
		zap.Duration("after", time.Since(start)))
	return res, nil
}
