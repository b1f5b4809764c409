package hub

import (
	"context"
	"errors"
	"strings"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
)

// inbound is an answer to one of our requests, matched by $rid.
type inbound struct {
	status int
	topic  mqtt.Topic
	body   []byte
}

// route sorts a message from the hub. It runs on paho's router goroutine
// and must never block: answers go to buffered channels, application
// callbacks to the event queue or their own goroutines.
func (c *Client) route(cn *connection, m paho.Message) {
	topic, body := m.Topic(), m.Payload()
	switch {
	case strings.HasPrefix(topic, prefixTwinResponse):
		c.answer(topic, prefixTwinResponse, body)
	case strings.HasPrefix(topic, prefixCredentialsRes):
		c.answer(topic, prefixCredentialsRes, body)
	case strings.HasPrefix(topic, prefixDesired):
		c.desiredUpdate(cn, topic, body)
	case strings.HasPrefix(topic, prefixMethod):
		c.methodCall(cn, topic, body)
	case strings.HasPrefix(topic, strings.TrimSuffix(c2dPrefix(c.opts.DeviceID), "/")):
		c.cloudMessage(topic, body)
	default:
		c.log.Warn("dropped a message on a topic the session does not serve", zap.String("topic", clip(topic)))
	}
}

// answer hands a response to the request waiting for its $rid. Answers
// nobody waits for (late, duplicated, or for a request that gave up) are
// dropped.
func (c *Client) answer(topic, prefix string, body []byte) {
	rt, err := parseResponseTopic(topic, prefix)
	if err != nil {
		c.log.Warn("dropped an answer with a malformed topic", zap.Error(err))
		return
	}
	c.mu.Lock()
	ch := c.pending[rt.rid]
	c.mu.Unlock()
	if ch == nil {
		c.log.Debug("dropped an answer no request is waiting for", zap.String("rid", clip(rt.rid)), zap.Int("status", rt.status))
		return
	}
	select {
	case ch <- inbound{status: rt.status, topic: rt.topic, body: body}:
	default:
		c.log.Warn("dropped an answer: too many for one request", zap.String("rid", rt.rid), zap.Int("status", rt.status))
	}
}

// desiredUpdate queues a desired-property patch for OnDesired.
func (c *Client) desiredUpdate(cn *connection, topic string, body []byte) {
	if c.opts.OnDesired == nil {
		return
	}
	topicVersion, haveTopicVersion, err := parseDesiredTopic(topic)
	if err != nil {
		c.log.Warn("dropped a desired-property update with a malformed topic", zap.Error(err))
		return
	}
	patch, version, err := parseDesiredPatch(body, topicVersion, haveTopicVersion)
	if err != nil {
		c.log.Warn("dropped a malformed desired-property update", zap.Error(err))
		return
	}
	c.events.push(func() { c.deliverDesired(patch, version, cn.id) }, c.log)
}

// desiredState is what OnDesired was last given: the desired version and
// the connection it came on.
type desiredState struct {
	known   bool
	version int
	connID  uint64
}

// deliverDesired passes a patch (or, after a connect, the whole desired
// section) to OnDesired unless the application already has that version.
// Within one connection versions only grow, so an older one is stale (a twin
// GET answered before a patch that overtook it). Across connections any
// different version is news: a re-created device starts its twin again.
// It runs on the event goroutine only.
func (c *Client) deliverDesired(patch map[string]any, version int, connID uint64) {
	d := &c.desired
	if d.known && ((connID == d.connID && version <= d.version) || (connID != d.connID && version == d.version)) {
		c.log.Debug("desired properties already delivered", zap.Int("version", version), zap.Int("delivered", d.version))
		return
	}
	*d = desiredState{known: true, version: version, connID: connID}
	c.log.Info("desired properties changed", zap.Int("version", version))
	c.opts.OnDesired(patch, version)
}

// resyncDesired reads the twin on a new connection and passes the desired
// section on if its version changed while the device was away.
func (c *Client) resyncDesired(cn *connection) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.life, c.opts.ResponseTimeout)
	defer cancel()
	doc, err := c.twinGetOn(ctx, cn)
	if err != nil {
		if !errors.Is(err, errConnectionLost) && c.life.Err() == nil {
			c.log.Warn("could not read the twin after connecting; desired properties may be stale until the next connection", zap.Error(err))
		}
		return
	}
	c.events.push(func() { c.deliverDesired(doc.desired, doc.desiredVersion, cn.id) }, c.log)
}

// cloudMessage queues a cloud-to-device message for OnMessage.
func (c *Client) cloudMessage(topic string, body []byte) {
	props, err := parseC2DTopic(topic, c.opts.DeviceID)
	if err != nil {
		c.log.Warn("dropped a cloud-to-device message with a malformed topic", zap.Error(err))
		return
	}
	if c.opts.OnMessage == nil {
		c.log.Debug("dropped a cloud-to-device message: no handler", zap.Int("bytes", len(body)))
		return
	}
	c.events.push(func() { c.opts.OnMessage(body, props) }, c.log)
}

// notifyConnection queues a call of OnConnectionChange.
func (c *Client) notifyConnection(connected bool, err error) {
	if c.opts.OnConnectionChange == nil {
		return
	}
	c.events.push(func() { c.opts.OnConnectionChange(connected, err) }, c.log)
}

// maxQueuedEvents bounds the callbacks waiting for a slow application, so a
// flood from the hub cannot exhaust memory.
const maxQueuedEvents = 1024

// eventQueue runs application callbacks one at a time, in order, on one
// goroutine, so OnDesired sees versions in order and no callback runs
// concurrently with another.
type eventQueue struct {
	mu      sync.Mutex
	items   []func()
	closing bool
	wake    chan struct{} // capacity 1
	done    chan struct{} // closed when run returns
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (q *eventQueue) push(f func(), log *zap.Logger) {
	q.mu.Lock()
	switch {
	case q.closing:
		q.mu.Unlock()
		return
	case len(q.items) >= maxQueuedEvents:
		q.mu.Unlock()
		log.Error("dropped an event: the application's handlers are not keeping up", zap.Int("queued", maxQueuedEvents))
		return
	}
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run delivers events until close, then delivers what is left and returns.
func (q *eventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		items, closing := q.items, q.closing
		q.items = nil
		q.mu.Unlock()
		for _, f := range items {
			f()
		}
		if len(items) > 0 {
			continue
		}
		if closing {
			return
		}
		<-q.wake
	}
}

// close stops accepting events and waits until the queued ones have run.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	<-q.done
}
