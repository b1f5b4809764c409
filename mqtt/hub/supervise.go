package hub

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

// Reasons a connection was ended from this side.
var (
	errReconnectRequested = errors.New("reconnecting on request")
	errTokenRefresh       = errors.New("reconnecting with a fresh SAS token")
)

// startSupervisor publishes a new connection and starts the goroutine that
// keeps the session up.
func (c *Client) startSupervisor(cn *connection) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.disconnect(ErrClosed)
		return ErrClosed
	}
	done := make(chan struct{})
	c.superDone = done
	c.wg.Add(1)
	c.mu.Unlock()
	c.connected(cn)
	go c.supervise(cn, done)
	return nil
}

// supervise owns the session's connection from the first connect until
// Close or a refusal: it waits for the connection to end, then reconnects
// with backoff. Only this goroutine replaces c.conn.
func (c *Client) supervise(cn *connection, done chan struct{}) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		c.superDone = nil
		c.mu.Unlock()
		close(done)
	}()
	failures := 0
	for {
		req, reason := c.hold(cn)
		if c.life.Err() != nil {
			cn.disconnect(ErrClosed)
			c.disconnected(cn, ErrClosed, 0)
			return
		}
		immediate := req != nil || errors.Is(reason, errTokenRefresh)
		// A connection that held for a while resets the backoff; one the
		// hub drops straight away counts as a failure, so a device kicked
		// at once (another connection with its ID, say) backs off instead
		// of reconnecting in a tight loop.
		switch {
		case c.opts.Now().Sub(cn.since) >= stableConnection:
			failures = 0
		case !immediate:
			failures++
		}
		if immediate {
			cn.disconnect(reason)
			c.log.Info("reconnecting", zap.NamedError("reason", reason))
		} else {
			c.log.Warn("connection lost; reconnecting with backoff", zap.Error(reason))
		}
		c.disconnected(cn, reason, failures)

		var ok bool
		if cn, ok = c.reconnect(immediate, req, &failures); !ok {
			return
		}
	}
}

// hold waits while cn is up. It returns why it ended and, when Reconnect
// asked for the end, the request to answer.
func (c *Client) hold(cn *connection) (*reconnectRequest, error) {
	var refresh <-chan time.Time
	if !cn.sasRefresh.IsZero() {
		t := time.NewTimer(max(0, cn.sasRefresh.Sub(c.opts.Now())))
		defer t.Stop()
		refresh = t.C
	}
	select {
	case <-cn.lost:
		return nil, cn.reason()
	case <-c.life.Done():
		return nil, ErrClosed
	case req := <-c.reconnects:
		return &req, errReconnectRequested
	case <-refresh:
		return nil, errTokenRefresh
	}
}

// reconnect dials until it succeeds, the Client closes, or the hub refuses
// the identity (then the Client stops). An immediate first attempt skips the
// backoff; a Reconnect request gets the result of the attempt after it.
func (c *Client) reconnect(immediate bool, req *reconnectRequest, failures *int) (*connection, bool) {
	for {
		if !immediate {
			delay := backoffDelay(*failures, c.opts.Random)
			c.setNextAttempt(delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case r := <-c.reconnects:
				t.Stop()
				req = &r
			case <-c.life.Done():
				t.Stop()
				return nil, false
			}
		}
		immediate = false
		cn, err := c.dial(c.life)
		if req != nil {
			req.reply <- err
			req = nil
		}
		if err == nil {
			c.connected(cn)
			return cn, true
		}
		if c.life.Err() != nil {
			return nil, false
		}
		*failures++
		c.attemptFailed(err, *failures)
		if !retryable(err) {
			c.setState(StateStopped, err, *failures)
			return nil, false
		}
		c.setState(StateReconnecting, err, *failures)
	}
}

// connected publishes cn, tells the application, and reads the twin again:
// desired updates made while disconnected were not pushed.
func (c *Client) connected(cn *connection) {
	c.mu.Lock()
	c.conn = cn
	c.status = Status{State: StateConnected, Since: cn.since}
	c.broadcastLocked()
	if c.opts.OnDesired != nil && !c.closed {
		c.wg.Add(1)
		go c.resyncDesired(cn)
	}
	c.mu.Unlock()
	c.log.Info("connected", zap.Uint64("connection", cn.id), zap.Bool("sas", !cn.sasRefresh.IsZero()))
	c.notifyConnection(true, nil)
}

// disconnected withdraws cn and tells the application why.
func (c *Client) disconnected(cn *connection, reason error, failures int) {
	c.mu.Lock()
	if c.conn == cn {
		c.conn = nil
	}
	if !c.closed {
		c.status = Status{State: StateReconnecting, Since: c.opts.Now(), Err: reason, Failures: failures}
	}
	c.broadcastLocked()
	c.mu.Unlock()
	c.notifyConnection(false, reason)
}
