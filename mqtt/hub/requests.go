package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// newRID makes a request ID: a random GUID, which fits the hub's rule of 4
// to 36 ASCII letters, digits and '-', neither first nor last (reference
// §2.3 "requestId rules"). A fresh one per request means a late answer to an
// abandoned request can never be taken for another's.
func newRID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])  // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// answersPerRequest is how many answers may queue for one request: the
// credential API sends two (202, then 200 or an error), a misbehaving hub
// more, which are dropped.
const answersPerRequest = 4

// register makes rid's answers arrive on the returned channel until the
// returned function is called.
func (c *Client) register(rid string) (<-chan inbound, func()) {
	ch := make(chan inbound, answersPerRequest)
	c.mu.Lock()
	c.pending[rid] = ch
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.pending, rid)
		c.mu.Unlock()
	}
}

// waitConnected returns the current connection, waiting for one while the
// Client reconnects. It fails at once when the Client is closed, has not
// been started, or stopped after a refusal.
func (c *Client) waitConnected(ctx context.Context) (*connection, error) {
	for {
		c.mu.Lock()
		cn, closed, changed, last := c.conn, c.closed, c.changed, c.status.Err
		// Connect's first attempts count as running: operations may be
		// started alongside it.
		running := c.superDone != nil || c.status.State == StateConnecting
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case cn != nil && !isDone(cn.lost):
			return cn, nil
		case !running && cn == nil:
			if last == nil {
				return nil, fmt.Errorf("%w: call Connect first", ErrNotConnected)
			}
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, last)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%w (%w); the last failure: %w", ErrNotConnected, ctx.Err(), last)
			}
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		}
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// roundTrip publishes a request on cn and waits for its first answer. It
// fails with errConnectionLost when cn ends first, so callers can repeat the
// request on the next connection.
func (c *Client) roundTrip(ctx context.Context, cn *connection, topic func(rid string) string, payload []byte, filter string) (inbound, error) {
	if cn.refused[filter] {
		return inbound{}, fmt.Errorf("the hub refused the subscription to %s, so it cannot answer", filter)
	}
	rid := newRID()
	answers, unregister := c.register(rid)
	defer unregister()
	tok := cn.client.Publish(topic(rid), 1, false, payload)
	published := tok.Done()
	timeout := time.NewTimer(c.opts.ResponseTimeout)
	defer timeout.Stop()
	for {
		select {
		case <-published:
			published = nil
			if err := tok.Error(); err != nil {
				return inbound{}, c.publishFailed(ctx, cn, err)
			}
		case in := <-answers:
			return in, nil
		case <-cn.lost:
			return inbound{}, errConnectionLost
		case <-timeout.C:
			return inbound{}, fmt.Errorf("%w within %s", ErrNoAnswer, c.opts.ResponseTimeout)
		case <-ctx.Done():
			return inbound{}, ctx.Err()
		}
	}
}

// publishFailed classifies a failed publish. Paho fails a publish when its
// connection has gone, before the loss is reported: then the caller waits
// for the loss and tries again on the next connection.
func (c *Client) publishFailed(ctx context.Context, cn *connection, err error) error {
	if cn.client.IsConnectionOpen() {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case <-cn.lost:
	case <-ctx.Done():
		return ctx.Err()
	}
	return errors.Join(errConnectionLost, err)
}
