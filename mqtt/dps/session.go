package dps

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// maxThrottled bounds consecutive throttled answers before giving the 429
// back to the caller, whose backoff then spaces out whole registrations.
const maxThrottled = 10

// disconnectQuiesce is how long (ms) Disconnect lets the DISCONNECT packet go
// out; DPS has nothing left to tell us by then.
const disconnectQuiesce = 250

// session is one connection to DPS for one Register call.
type session struct {
	c      *Client
	log    *zap.Logger
	parent context.Context
	// ctx ends with the parent or when the connection is lost, so every wait
	// notices both; its cause tells them apart.
	ctx    context.Context
	cancel context.CancelCauseFunc
	cli    paho.Client
	op     string // the step under way, for errors
	rid    uint64
	pace   pacer

	mu   sync.Mutex
	want string       // the $rid of the request awaiting its answer
	got  chan inbound // where its answer goes
}

// inbound is a message from DPS routed to the request it answers.
type inbound struct {
	topic   string
	payload []byte
}

// connectionLost is the cancel cause when the connection drops.
type connectionLost struct{ err error }

func (l *connectionLost) Error() string { return "connection lost: " + l.err.Error() }
func (l *connectionLost) Unwrap() error { return l.err }

func newSession(ctx context.Context, c *Client) *session {
	sctx, cancel := context.WithCancelCause(ctx)
	return &session{c: c, log: c.log, parent: ctx, ctx: sctx, cancel: cancel, op: OpConnect}
}

// register runs the whole exchange on a fresh connection.
func (s *session) register(body []byte, withCSR bool) (*Result, error) {
	if err := s.connect(); err != nil {
		return nil, err
	}
	if err := s.subscribe(); err != nil {
		return nil, err
	}
	s.log.Debug("sending the register request", zap.Bool("csr", withCSR), zap.Int("bytes", len(body)))
	return s.run(body)
}

func (s *session) close() {
	if s.cli != nil && s.cli.IsConnectionOpen() {
		s.cli.Disconnect(disconnectQuiesce)
	}
	s.cancel(context.Canceled)
}

// connect opens the MQTT connection. The dial itself honours ctx; should ctx
// end during the MQTT handshake, the socket is closed so paho gives up at
// once instead of after its connect timeout.
func (s *session) connect() error {
	s.op = OpConnect
	o := &s.c.opts
	tlsConf, err := s.tlsConfig()
	if err != nil {
		return err
	}
	var (
		mu        sync.Mutex
		dialErr   error
		stopClose func() bool
	)
	po := paho.NewClientOptions().
		AddBroker("tls://" + s.c.addr).
		SetClientID(o.RegistrationID).
		SetUsername(mqtt.DPSUsername(o.IDScope, o.RegistrationID, o.APIVersion, o.ClientVersion)).
		SetPassword(s.password()).
		SetCleanSession(true).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(o.ConnectTimeout).
		SetKeepAlive(defaultKeepAlive).
		SetWriteTimeout(o.ResponseTimeout).
		SetDefaultPublishHandler(s.onMessage).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.log.Info("the connection to DPS was lost", zap.Error(err))
			s.cancel(&connectionLost{err: err})
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: o.ConnectTimeout}, Config: tlsConf}
			conn, err := d.DialContext(s.ctx, "tcp", u.Host)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				dialErr = err
				return nil, err
			}
			stopClose = context.AfterFunc(s.ctx, func() { _ = conn.Close() })
			return conn, nil
		})
	s.cli = paho.NewClient(po)
	s.log.Debug("connecting to DPS", zap.String("endpoint", s.c.addr), zap.String("auth", string(o.Auth.Method())))
	tok := s.cli.Connect()
	err = mqtt.WaitToken(s.ctx, tok)
	if err != nil && s.ctx.Err() != nil {
		// The socket is being closed under paho, so this is short; waiting
		// keeps paho's goroutine from outliving the call.
		<-tok.Done()
	}
	mu.Lock()
	if stopClose != nil {
		stopClose()
	}
	dialed := dialErr
	mu.Unlock()
	if s.parent.Err() != nil {
		return s.parent.Err()
	}
	if err != nil {
		ct, _ := tok.(*paho.ConnectToken)
		var rc byte
		if ct != nil {
			rc = ct.ReturnCode()
		}
		return connectError(err, rc, dialed, o.Auth.Method(), s.c.addr)
	}
	return nil
}

func (s *session) tlsConfig() (*tls.Config, error) {
	a := s.c.opts.Auth
	tlsOpts := mqtt.TLSOptions{ServerName: s.c.host, Roots: s.c.roots, KeyAlgorithm: a.keyAlgorithm()}
	if a.Method() == AuthX509 {
		cert, err := a.tlsCertificate()
		if err != nil {
			return nil, fmt.Errorf("X.509 onboarding: %w", err)
		}
		// The birth certificate does not change during a registration; a
		// new Register builds a new config anyway.
		tlsOpts.ClientCertificate = func() (*tls.Certificate, error) { return &cert, nil }
	}
	return mqtt.ClientTLS(tlsOpts)
}

// password is the SAS token for symmetric keys, valid for TokenLifetime
// (only the connection needs it); X.509 devices send none.
func (s *session) password() string {
	o := &s.c.opts
	switch o.Auth.Method() {
	case AuthSymmetricKey, AuthGroupKey:
		key := o.Auth.deviceKey(o.RegistrationID)
		return sas.Sign(sas.DPSResource(o.IDScope, o.RegistrationID), key, sas.KeyNameRegistration, o.Now().Add(o.TokenLifetime))
	}
	return ""
}

// subscribe asks for the responses before any request, as DPS requires.
func (s *session) subscribe() error {
	s.op = OpSubscribe
	if err := mqtt.WaitToken(s.ctx, s.cli.Subscribe(responseFilter, 1, s.onMessage)); err != nil {
		return s.fail(err)
	}
	return nil
}

// onMessage routes an answer to the request waiting for its $rid and drops
// anything else: a late answer to an earlier request, or a duplicate. It
// runs on paho's goroutine and must not block.
func (s *session) onMessage(_ paho.Client, m paho.Message) {
	t, err := mqtt.ParseTopic(m.Topic())
	if err != nil {
		s.log.Warn("ignoring a message with a malformed topic", zap.String("topic", clip(m.Topic(), 256)), zap.Error(err))
		return
	}
	rid, _ := t.RequestID()
	s.mu.Lock()
	want, ch := s.want, s.got
	s.mu.Unlock()
	if want == "" || rid != want {
		s.log.Debug("ignoring a message for no pending request", zap.String("topic", clip(m.Topic(), 256)), zap.String("waiting_for", want))
		return
	}
	select {
	case ch <- inbound{topic: m.Topic(), payload: bytes.Clone(m.Payload())}:
	default:
		s.log.Debug("ignoring a repeated answer", zap.String("topic", clip(m.Topic(), 256)))
	}
}

// expect sets the $rid whose answer is awaited ("" for none) and returns a
// fresh channel for it, so nothing left over from another request is read.
func (s *session) expect(rid string) chan inbound {
	ch := make(chan inbound, 1)
	s.mu.Lock()
	s.want, s.got = rid, ch
	s.mu.Unlock()
	return ch
}

// request publishes one request on prefix + $rid + suffix and waits for its
// answer.
func (s *session) request(op, prefix, suffix string, payload []byte) (inbound, responseTopic, error) {
	s.op = op
	s.rid++
	rid := strconv.FormatUint(s.rid, 10)
	ch := s.expect(rid)
	defer s.expect("")
	topic := prefix + rid + suffix
	s.pace.record(s.c.opts.Now())
	if err := mqtt.WaitToken(s.ctx, s.cli.Publish(topic, 1, false, payload)); err != nil {
		return inbound{}, responseTopic{}, s.fail(err)
	}
	timer := time.NewTimer(s.c.opts.ResponseTimeout)
	defer timer.Stop()
	select {
	case m := <-ch:
		rt, err := parseResponseTopic(m.topic)
		if err != nil {
			return inbound{}, responseTopic{}, &Error{Kind: KindProtocol, Op: op, Err: err}
		}
		if rt.badRetryAfter != "" {
			s.log.Warn("DPS sent a retry-after that is not a number of seconds; using the default", zap.String("retry_after", rt.badRetryAfter))
		}
		return m, rt, nil
	case <-timer.C:
		return inbound{}, responseTopic{}, &Error{Kind: KindTimeout, Op: op, Message: fmt.Sprintf("no answer within %s", s.c.opts.ResponseTimeout)}
	case <-s.ctx.Done():
		return inbound{}, responseTopic{}, s.fail(nil)
	}
}

// fail turns a wait's failure into the error to return: the caller's
// context error, a lost connection, or the token's own error.
func (s *session) fail(err error) error {
	if s.parent.Err() != nil {
		return s.parent.Err()
	}
	var lost *connectionLost
	if errors.As(context.Cause(s.ctx), &lost) {
		return &Error{Kind: KindNetwork, Op: s.op, Message: "the connection to DPS was lost", Err: lost.err}
	}
	if errors.Is(err, mqtt.ErrSubscriptionRefused) {
		return &Error{Kind: KindProtocol, Op: s.op, Err: err}
	}
	if err == nil {
		err = context.Cause(s.ctx)
	}
	return &Error{Kind: KindNetwork, Op: s.op, Err: err}
}

// sleep waits d, unless that would outlast the registration's deadline:
// then it returns tooLong(d) at once, so the caller learns the wait now.
func (s *session) sleep(d time.Duration, tooLong func(time.Duration) error) error {
	if deadline, ok := s.ctx.Deadline(); ok && time.Until(deadline) < d {
		return tooLong(d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return s.fail(nil)
	}
}
