package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// dpsSession is one device's DPS connection. Requests are answered by a
// worker goroutine, in order, never from inside Publish: see send.
type dpsSession struct {
	d    *dps
	ctx  context.Context // the connection's; done when it ends
	conn *mqttsrv.Conn
	id   *dpsIdentity
	log  *zap.Logger
	// qos is the granted QoS of the response subscription, which answers
	// are published at; -1 until the device subscribes.
	qos  atomic.Int32
	jobs chan dpsJob
}

// dpsJob is a request waiting for the worker.
type dpsJob struct {
	req      dpsRequest
	payload  []byte
	received time.Time
	acked    <-chan struct{} // closed once the request's PUBACK is written
}

// dpsAnswer is a response before it becomes a topic and a body.
type dpsAnswer struct {
	status     int
	retryAfter int // seconds; 0 leaves retry-after out
	body       []byte
}

// dpsSessionQueue bounds the requests a device can have waiting; beyond it
// Publish blocks, which stops reading from that device.
const dpsSessionQueue = 16

func newDPSSession(ctx context.Context, d *dps, conn *mqttsrv.Conn, id *dpsIdentity, log *zap.Logger) *dpsSession {
	s := &dpsSession{d: d, ctx: ctx, conn: conn, id: id, log: log, jobs: make(chan dpsJob, dpsSessionQueue)}
	s.qos.Store(-1)
	return s
}

// Subscribe grants only the response filter, a QoS 2 request as QoS 1
// (reference §1.1, §1.3).
func (s *dpsSession) Subscribe(filters []mqttsrv.Subscription) []byte {
	codes := make([]byte, len(filters))
	for i, f := range filters {
		if f.Filter != dpsResponseFilter {
			codes[i] = 0x80
			s.log.Warn("subscription refused: DPS supports only "+dpsResponseFilter, zap.String("filter", f.Filter))
			continue
		}
		codes[i] = min(f.QoS, 1)
		s.qos.Store(int32(codes[i]))
	}
	return codes
}

// Unsubscribe stops answers: they would go nowhere.
func (s *dpsSession) Unsubscribe(filters []string) {
	if slices.Contains(filters, dpsResponseFilter) {
		s.qos.Store(-1)
	}
}

// Publish takes a request from the device and queues it for the worker.
func (s *dpsSession) Publish(ctx context.Context, m *mqttsrv.Message) error {
	req, err := parseDPSRequestTopic(m.Topic)
	switch {
	case errors.Is(err, errDPSNoRequestID):
		s.log.Warn("request ignored: no usable $rid to answer on", zap.String("topic", m.Topic))
		return nil
	case err != nil:
		s.log.Warn("closing the connection: the device published to a topic DPS does not serve", zap.String("topic", m.Topic))
		return err
	}
	if s.qos.Load() < 0 {
		// DPS answers only on the subscription; a device that publishes
		// first never hears back (reference §1.3: subscribe before publishing).
		s.log.Warn("request ignored: the device has not subscribed to "+dpsResponseFilter,
			zap.Stringer("request", req.Kind), zap.String("rid", req.RequestID))
		return nil
	}
	job := dpsJob{req: req, payload: bytes.Clone(m.Payload), received: time.Now(), acked: m.Acknowledged()}
	select {
	case s.jobs <- job:
	case <-ctx.Done():
	}
	return nil
}

// Closed frees the registration ID for the device's next connection.
func (s *dpsSession) Closed(reason error) {
	s.d.conns.Unregister(strings.ToLower(s.id.registrationID), s.conn)
	s.log.Debug("DPS session ended", zap.NamedError("reason", reason))
}

// run is the session's worker: it answers requests one at a time, in the
// order they came, until the connection or the emulator ends.
func (s *dpsSession) run() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.d.ctx.Done():
			return
		case j := <-s.jobs:
			s.handle(j)
		}
	}
}

// handle applies an injected fault, if one matches, and answers.
func (s *dpsSession) handle(j dpsJob) {
	operation := OpRegister
	if j.req.Kind == dpsPoll {
		operation = OpPoll
	}
	f, ok := s.d.matchFault(s.id.registrationID, operation, dpsAnswerFault)
	if !ok {
		s.send(j, s.answer(j))
		return
	}
	s.log.Info("injected fault", zap.Int("fault", f.ID), zap.String("action", f.Action), zap.String("operation", operation))
	switch f.Action {
	case ActionDrop:
		s.conn.Close(fmt.Errorf("injected fault %d: connection dropped instead of answering %s", f.ID, operation))
	case ActionDelay:
		// Elsewhere, so later requests are not held up behind this one.
		s.d.spawn(func() {
			if s.d.sleep(s.ctx, f.DelayDuration()) {
				s.send(j, s.answer(j))
			}
		})
	case ActionThrottle, ActionError:
		e := dpsFaultError(f)
		s.send(j, dpsAnswer{status: e.status(), retryAfter: e.retryAfter, body: e.body(s.d.e.now())})
	case ActionMalformedJSON:
		// The request is carried out; only its answer is garbled.
		a := s.answer(j)
		s.send(j, dpsAnswer{status: 200, body: dpsMalformedJSON(a.body)})
	case ActionHostile:
		a := s.answer(j)
		a.body = dpsHostileJSON(a.body, dpsHostileSize)
		s.send(j, a)
	}
}

func (s *dpsSession) answer(j dpsJob) dpsAnswer {
	if j.req.Kind == dpsPoll {
		return s.poll(j.req)
	}
	return s.register(j.payload)
}

// send publishes an answer, never before the request's PUBACK has been
// written: the C# SDK fails the registration on a PUBLISH while it waits for
// its PUBACK. (The server acknowledges a request only once Session.Publish
// has returned, so without this wait the answer could overtake it.)
func (s *dpsSession) send(j dpsJob, a dpsAnswer) {
	if j.acked != nil {
		select {
		case <-j.acked:
		case <-s.ctx.Done():
			return
		}
	}
	qos := s.qos.Load()
	if qos < 0 {
		s.log.Info("answer dropped: the device unsubscribed", zap.Int("status", a.status), zap.String("rid", j.req.RequestID))
		return
	}
	topic := dpsResponseTopic(a.status, j.req.RequestID, a.retryAfter)
	if _, err := s.conn.Publish(topic, a.body, byte(qos)); err != nil {
		s.log.Info("answer not sent", zap.String("topic", topic), zap.Error(err))
		return
	}
	s.log.Debug("answered", zap.String("topic", topic), zap.Int("bytes", len(a.body)))
}
