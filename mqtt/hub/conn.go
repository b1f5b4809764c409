package hub

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
	"github.com/dpsagent/dpsagent/mqtt/sas"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// connection is one MQTT connection to the hub. Each (re)connect makes a new
// paho client: paho warns that reusing a client after Disconnect can race,
// and a fresh one ties every message and answer to the connection it came
// on.
type connection struct {
	id     uint64
	client paho.Client
	since  time.Time
	// sasRefresh is when to reconnect with a fresh token; zero for X.509.
	sasRefresh time.Time
	// refused holds the filters the hub refused in its SUBACK; requests
	// that need one fail at once instead of waiting for an answer that
	// cannot come.
	refused map[string]bool

	// ctx ends with the connection; its cause is the reason.
	ctx  context.Context
	lost <-chan struct{} // ctx.Done()
	end  context.CancelCauseFunc
}

func newConnection(id uint64) *connection {
	ctx, end := context.WithCancelCause(context.Background())
	return &connection{id: id, ctx: ctx, lost: ctx.Done(), end: end, refused: map[string]bool{}}
}

// reason is why the connection ended; only valid after lost is closed.
func (cn *connection) reason() error {
	<-cn.lost
	return context.Cause(cn.ctx)
}

// disconnect ends the connection from this side, giving paho a moment to
// send DISCONNECT.
func (cn *connection) disconnect(reason error) {
	cn.end(reason)
	cn.client.Disconnect(250)
}

// credentials returns the user name and password and, for SAS, when to
// refresh the token. The X.509 identity is read here, at every attempt, so a
// renewed certificate is picked up by the next connection.
func (c *Client) credentials() (cert *tls.Certificate, password string, refresh time.Time, err error) {
	if c.opts.Auth.Certificate != nil {
		cert, err = c.opts.Auth.Certificate()
		if err != nil {
			return nil, "", time.Time{}, fmt.Errorf("get the device certificate: %w", err)
		}
		if cert == nil || len(cert.Certificate) == 0 || cert.PrivateKey == nil {
			return nil, "", time.Time{}, fmt.Errorf("get the device certificate: the identity callback returned no certificate chain or key")
		}
		return cert, "", time.Time{}, nil
	}
	now := c.opts.Now()
	// A token's expiry is in whole seconds; the refresh is planned from the
	// expiry actually signed, or a short lifetime would lose up to a second.
	expiry := now.Add(c.opts.Auth.TokenLifetime).Truncate(time.Second)
	password = sas.Sign(sas.HubResource(c.opts.Host, c.opts.DeviceID), c.opts.Auth.SymmetricKey, "", expiry)
	return nil, password, now.Add(sasRefreshDelay(expiry.Sub(now))), nil
}

// dial makes one connection attempt: TLS, CONNECT, then the subscriptions.
// Every failure is a *ConnectError.
func (c *Client) dial(ctx context.Context) (*connection, error) {
	fail := func(code byte, err error) (*connection, error) {
		return nil, &ConnectError{Host: c.opts.Host, Code: code, Err: err}
	}
	cert, password, refresh, err := c.credentials()
	if err != nil {
		return fail(0, err)
	}
	tlsConf, err := c.tlsConfig(cert)
	if err != nil {
		return fail(0, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()

	cn := newConnection(c.nextConnID())
	// The dialled socket is closed if ctx ends while paho waits for the
	// CONNACK, which paho itself cannot be asked to abandon.
	var (
		rawMu sync.Mutex
		raw   net.Conn
	)
	stop := context.AfterFunc(ctx, func() {
		rawMu.Lock()
		defer rawMu.Unlock()
		if raw != nil {
			_ = raw.Close()
		}
	})
	defer stop()

	o := paho.NewClientOptions().
		AddBroker("tls://" + c.opts.Address).
		SetClientID(c.opts.DeviceID).
		SetUsername(c.opts.username()).
		SetPassword(password).
		// Explicit 3.1.1: otherwise paho retries a refused CONNECT as MQTT
		// 3.1, and the hub's answer to that hides the real refusal.
		SetProtocolVersion(4).
		SetCleanSession(c.opts.CleanSession).
		SetKeepAlive(c.opts.KeepAlive).
		SetConnectTimeout(c.opts.ConnectTimeout).
		SetWriteTimeout(c.opts.ConnectTimeout).
		// Reconnection is ours: paho's backoff has no injectable jitter, and
		// paho would retry a refused identity forever.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// Handlers run in order on paho's router goroutine; route never
		// blocks, so desired updates keep their order.
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.route(cn, m) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			cn.end(fmt.Errorf("%w: %w", errConnectionLost, err))
		}).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			d := tls.Dialer{Config: tlsConf}
			conn, err := d.DialContext(ctx, "tcp", c.opts.Address)
			if err != nil {
				return nil, err
			}
			rawMu.Lock()
			defer rawMu.Unlock()
			raw = conn
			return conn, nil
		})
	// Set before connecting: messages of a persistent session may arrive,
	// and be answered on cn.client, as soon as the CONNACK is read.
	cn.client = paho.NewClient(o)
	cn.since = c.opts.Now()
	cn.sasRefresh = refresh
	tok := cn.client.Connect()
	<-tok.Done() // bounded: the dial and the CONNACK read both end with ctx
	if err := tok.Error(); err != nil {
		code := tok.(*paho.ConnectToken).ReturnCode()
		if code >= connackProtocol && code <= connackUnauthorized {
			return fail(code, err)
		}
		if ctx.Err() != nil {
			// Keep the context's error visible: a caller that gave up, or
			// Close, is not a network failure to report as such.
			return fail(0, fmt.Errorf("%w: %w (%w)", ErrNetwork, err, ctx.Err()))
		}
		return fail(0, fmt.Errorf("%w: %w", ErrNetwork, err))
	}
	if err := c.subscribe(ctx, cn); err != nil {
		cn.disconnect(err)
		return fail(0, err)
	}
	return cn, nil
}

// subscribe asks for the five topics the session serves. A filter the hub
// refuses is logged and remembered, not fatal: the other features still
// work (a hub without the credential API, say).
func (c *Client) subscribe(ctx context.Context, cn *connection) error {
	filters := map[string]byte{
		filterTwinResponses:        0,
		filterDesired:              0,
		filterMethods:              0,
		filterCredentials:          0,
		c2dFilter(c.opts.DeviceID): 1, // cloud-to-device messages must not be lost
	}
	tok := cn.client.SubscribeMultiple(filters, nil)
	if err := waitOn(ctx, cn, tok); err != nil && !errors.Is(err, mqtt.ErrSubscriptionRefused) {
		return fmt.Errorf("%w: subscribe: %w", ErrNetwork, err)
	}
	for filter, code := range tok.(*paho.SubscribeToken).Result() {
		if code == 0x80 {
			cn.refused[filter] = true
			c.log.Warn("the hub refused a subscription; the features it carries will fail",
				zap.String("filter", filter))
		}
	}
	return nil
}

// tlsConfig is the TLS configuration of one attempt, presenting cert (nil
// for SAS), the identity read for this attempt.
func (c *Client) tlsConfig(cert *tls.Certificate) (*tls.Config, error) {
	o := mqtt.TLSOptions{ServerName: c.opts.Host, Roots: c.roots}
	if cert != nil {
		o.ClientCertificate = func() (*tls.Certificate, error) { return cert, nil }
		o.KeyAlgorithm = keyAlgorithm(cert)
	}
	conf, err := mqtt.ClientTLS(o)
	if err != nil {
		return nil, fmt.Errorf("connect to IoT Hub %s: %w", c.opts.Host, err)
	}
	return conf, nil
}

// keyAlgorithm names the client key's algorithm, so an RSA key (whose TPM
// signatures TLS 1.3 rejects) is held to TLS 1.2; "" when unknown.
func keyAlgorithm(cert *tls.Certificate) keys.Algorithm {
	if k, ok := cert.PrivateKey.(keys.Key); ok {
		return k.Algorithm()
	}
	if s, ok := cert.PrivateKey.(crypto.Signer); ok {
		if alg, err := keys.AlgorithmOf(s.Public()); err == nil {
			return alg
		}
	}
	return ""
}
