package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
)

// State is where a Client's connection stands.
type State int

// States of a Client.
const (
	// StateIdle: Connect has not been called, or gave up.
	StateIdle State = iota
	// StateConnecting: Connect is making its first connection.
	StateConnecting
	// StateConnected: connected; operations run.
	StateConnected
	// StateReconnecting: the connection was lost; reconnecting with backoff.
	StateReconnecting
	// StateStopped: the hub refused the identity (Status.Err matches
	// ErrUnauthorized) or the client itself; no more attempts until Connect
	// or Reconnect is called.
	StateStopped
	// StateClosed: Close was called.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateStopped:
		return "stopped"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a snapshot of the connection, for status displays and health
// checks.
type Status struct {
	State State
	// Since is when State was entered.
	Since time.Time
	// Err is why the Client is not connected: the loss or the last failed
	// attempt. nil while connected.
	Err error
	// Failures counts failed attempts since the last connection.
	Failures int
	// NextAttempt is when the next reconnect attempt is due, zero unless
	// waiting for one.
	NextAttempt time.Time
}

// Client is a device's session with one IoT Hub. Create it with New, start
// it with Connect, and end it with Close. Its methods are safe for
// concurrent use.
type Client struct {
	opts  Options
	log   *zap.Logger
	roots *x509.CertPool

	// life ends when Close is called; every goroutine of the Client watches
	// it.
	life   context.Context
	cancel context.CancelFunc
	// wg counts the Client's goroutines and in-flight Connect/Reconnect
	// calls; Close waits for them.
	wg sync.WaitGroup

	// connectMu serialises Connect and Reconnect, so two callers never dial
	// side by side.
	connectMu sync.Mutex
	// reconnects carries Reconnect's requests to the supervisor.
	reconnects chan reconnectRequest

	mu      sync.Mutex
	closed  bool
	status  Status
	conn    *connection   // nil unless connected
	changed chan struct{} // closed and replaced whenever conn or status changes
	// superDone is closed when the running supervisor exits; nil when none
	// runs.
	superDone chan struct{}
	connSeq   uint64
	pending   map[string]chan inbound // by $rid

	events      *eventQueue
	eventsOnce  sync.Once
	methodSlots chan struct{}
	// desired is the dispatcher goroutine's own state: never touched
	// elsewhere, so it needs no lock.
	desired desiredState
}

type reconnectRequest struct {
	reply chan error // buffered: the supervisor never blocks on it
}

// New checks opts and prepares a Client; nothing is dialled, and no
// goroutine started, until Connect. A Client that was connected must be
// closed.
func New(opts Options) (*Client, error) {
	o, err := opts.validate()
	if err != nil {
		return nil, err
	}
	roots := o.RootCAs
	if roots == nil {
		var err error
		if roots, err = (mqtt.TrustConfig{BundleFile: o.TrustBundleFile}).Roots(); err != nil {
			return nil, fmt.Errorf("hub options: %w", err)
		}
	}
	life, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:        o,
		log:         o.Logger.Named("hub").With(zap.String("hub", o.Host), zap.String("device_id", o.DeviceID)),
		roots:       roots,
		life:        life,
		cancel:      cancel,
		reconnects:  make(chan reconnectRequest),
		changed:     make(chan struct{}),
		pending:     map[string]chan inbound{},
		events:      newEventQueue(),
		methodSlots: make(chan struct{}, maxConcurrentMethods),
	}
	c.status = Status{State: StateIdle, Since: o.Now()}
	return c, nil
}

// Status returns a snapshot of the connection state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Connect makes the first connection, retrying failures that may pass (the
// network, a busy hub) with backoff until ctx ends, and returns at once when
// the hub refuses the identity (errors.Is(err, ErrUnauthorized)). Once
// connected, the Client keeps the connection up by itself until Close, or
// until a reconnect is refused. Calling Connect while that runs does
// nothing.
func (c *Client) Connect(ctx context.Context) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.wg.Done()
	c.connectMu.Lock()
	defer c.connectMu.Unlock()
	if c.running() {
		return nil
	}
	ctx, stop := c.withLife(ctx)
	defer stop()
	c.setState(StateConnecting, nil, 0)
	for failures := 0; ; {
		cn, err := c.dial(ctx)
		if err == nil {
			return c.startSupervisor(cn)
		}
		if c.isClosed() {
			return ErrClosed
		}
		failures++
		c.attemptFailed(err, failures)
		if !retryable(err) {
			c.setState(StateStopped, err, failures)
			return err
		}
		if ctx.Err() != nil {
			c.setState(StateIdle, err, failures)
			return err
		}
		delay := backoffDelay(failures-1, c.opts.Random)
		c.setNextAttempt(delay)
		if !sleep(ctx, delay) {
			c.setState(StateIdle, err, failures)
			return fmt.Errorf("connect to IoT Hub %s: %w; the last attempt failed: %w", c.opts.Host, ctx.Err(), err)
		}
	}
}

// Reconnect drops the current connection and connects again at once, with
// the identity the certificate callback returns now: after a renewal, this
// puts the new certificate to use. It returns the result of that first
// attempt; if it failed for a reason that may pass, the Client goes on
// retrying with backoff as after any loss. When the Client is stopped or
// idle, Reconnect makes one attempt and, on success, resumes.
func (c *Client) Reconnect(ctx context.Context) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.wg.Done()
	c.connectMu.Lock()
	defer c.connectMu.Unlock()
	ctx, stop := c.withLife(ctx)
	defer stop()

	c.mu.Lock()
	done := c.superDone
	c.mu.Unlock()
	if done == nil {
		c.setState(StateConnecting, nil, 0)
		cn, err := c.dial(ctx)
		if err != nil {
			if c.isClosed() {
				return ErrClosed
			}
			c.attemptFailed(err, 1)
			state := StateIdle
			if !retryable(err) {
				state = StateStopped
			}
			c.setState(state, err, 1)
			return err
		}
		return c.startSupervisor(cn)
	}
	req := reconnectRequest{reply: make(chan error, 1)}
	select {
	case c.reconnects <- req:
	case <-done:
		return fmt.Errorf("reconnect to IoT Hub %s: the session stopped meanwhile: %w", c.opts.Host, c.Status().Err)
	case <-ctx.Done():
		return fmt.Errorf("reconnect to IoT Hub %s: %w", c.opts.Host, ctx.Err())
	}
	select {
	case err := <-req.reply:
		return err
	case <-done:
		// The supervisor answers before it stops; read what it said.
		select {
		case err := <-req.reply:
			return err
		default:
			return fmt.Errorf("reconnect to IoT Hub %s: the session stopped meanwhile: %w", c.opts.Host, c.Status().Err)
		}
	case <-ctx.Done():
		return fmt.Errorf("reconnect to IoT Hub %s: %w", c.opts.Host, ctx.Err())
	}
}

// Close disconnects and ends every goroutine of the Client; pending
// operations fail with ErrClosed. It waits for running handlers (OnMethod
// through its ctx, and the queued OnDesired, OnMessage and
// OnConnectionChange calls), so it must not be called from one. Calling it
// again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	c.conn = nil
	c.status = Status{State: StateClosed, Since: c.opts.Now(), Err: ErrClosed}
	c.broadcastLocked()
	c.mu.Unlock()
	c.startEvents() // so that close finds it running
	c.events.close()
	c.log.Info("hub session closed")
	return nil
}

// enter registers a Connect or Reconnect call with wg, unless closed: Close
// then waits for it, and wg.Add never races with wg.Wait.
func (c *Client) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	c.startEvents()
	return true
}

// startEvents starts the callback goroutine on first use, so a Client that
// is created but never connected holds no goroutine.
func (c *Client) startEvents() {
	c.eventsOnce.Do(func() { go c.events.run() })
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.superDone != nil
}

func (c *Client) nextConnID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connSeq++
	return c.connSeq
}

// withLife derives a context that also ends when the Client is closed.
func (c *Client) withLife(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.life, cancel)
	return ctx, func() { stop(); cancel() }
}

// broadcastLocked wakes everyone waiting for a change; c.mu must be held.
func (c *Client) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) setState(s State, err error, failures int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.status = Status{State: s, Since: c.opts.Now(), Err: err, Failures: failures}
	c.broadcastLocked()
}

func (c *Client) setNextAttempt(delay time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.NextAttempt = c.opts.Now().Add(delay)
}

// attemptFailed logs a failed attempt and tells the application.
func (c *Client) attemptFailed(err error, failures int) {
	var ce *ConnectError
	unauthorized := errors.As(err, &ce) && ce.Unauthorized()
	if unauthorized {
		c.log.Error("the hub refused the device's identity; not retrying", zap.Error(err))
	} else {
		c.log.Warn("connection attempt failed", zap.Int("failures", failures), zap.Bool("retrying", retryable(err)), zap.Error(err))
	}
	c.notifyConnection(false, err)
}

// retryable reports whether an attempt that failed with err may succeed
// later.
func retryable(err error) bool {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return ce.Retryable()
	}
	return !errors.Is(err, ErrClosed)
}

// sleep waits for d or ctx, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
