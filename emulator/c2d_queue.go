package emulator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// Each device's cloud-to-device queue, as IoT Hub keeps it. Sources, besides
// the reference's [DOC-HUB-MQTT] and [DOC-HUB-LIMITS]:
//   - the C2D guide: Microsoft Learn "Understand cloud-to-device messaging"
//     (MicrosoftDocs/azure-docs articles/iot-hub/iot-hub-devguide-messages-c2d.md,
//     02/2026);
//   - the quotas page: "IoT Hub quotas and throttling"
//     (articles/iot-hub/iot-hub-devguide-quotas-throttling.md, "Other limits");
//   - the error codes: learn.microsoft.com/rest/api/iothub/common-error-codes
//     and "403004 DeviceMaximumQueueDepthExceeded" (docs.azure.cn
//     iot-hub-troubleshoot-error-403004-devicemaximumqueuedepthexceeded).
//
// What the emulator does, and why:
//   - A message is kept until the device has it, at least once: the hub
//     "persists cloud-to-device messages in per-device queues" and removes one
//     only once the device completes it (C2D guide). Over MQTT the PUBACK
//     completes it; a device cannot reject or abandon one (C2D guide,
//     [DOC-HUB-MQTT]), and Microsoft's Node.js SDK says as much: its complete()
//     does nothing because "all messages are automatically completed". A
//     message sent at QoS 0 (a QoS 0 subscription) is complete once written.
//   - It is delivered once the device's connection is subscribed to its C2D
//     topic: at once if it is, else when it subscribes, or right after the
//     CONNACK when a CleanSession 0 session kept the subscription
//     ([DOC-HUB-MQTT] "Receiving cloud-to-device messages"). That page also
//     says a device receives the messages "sent to it after the time of the
//     subscription"; the emulator follows the C2D guide's queue instead and
//     also delivers what was sent before the device first subscribed, which is
//     what devices that provision and then connect rely on.
//   - Several messages may be in flight at once, in queue order: the hub
//     publishes "as they are available", in order (Azure IoT protocol gateway,
//     docs/DeveloperGuide.md "Message Ordering", the open-source forerunner of
//     the hub's MQTT adapter).
//   - One that was published but not acknowledged when the connection ends
//     goes back to the queue and is published again on the device's next
//     subscribed connection (at-least-once; the C2D guide's lock timeout
//     returns it to Enqueued). While the connection lives it stays in flight:
//     the one-minute lock timeout and the gateway's retransmission on the
//     same connection are not modelled.
//   - At most 50 messages wait per device, sent and unacknowledged ones
//     included; one more is refused with 403004 DeviceMaximumQueueDepthExceeded
//     (HTTP 403) (C2D guide, quotas page, error codes).
//   - A message past its expiry is dead-lettered, never delivered (C2D guide);
//     the emulator drops it and logs why. Feedback messages are not emulated.
//   - The queue is in memory: a restart empties it, though the device
//     registry and twins are kept (registry_store.go says why).

// c2dMaxQueued is how many messages may wait for one device.
const c2dMaxQueued = 50

// c2dAckTimeout bounds how long the admin API waits for the device's PUBACK
// before answering that the message is sent but not yet acknowledged.
const c2dAckTimeout = 30 * time.Second

// ErrC2DQueueFull: the device already has c2dMaxQueued messages waiting (the
// admin API answers 403, as IoT Hub's 403004 does).
var ErrC2DQueueFull = errors.New("403004 DeviceMaximumQueueDepthExceeded")

// Message states as GET /api/devices/{id}/c2d shows them.
const (
	C2DStatusQueued    = "queued"    // waiting for the device to be connected and subscribed
	C2DStatusSent      = "sent"      // published, awaiting the device's PUBACK
	C2DStatusDelivered = "delivered" // the device has it; it has left the queue
)

// C2DDelivery says how a message reached the device: POST
// /api/devices/{id}/c2d answers 200 with it when the device had the message
// at once.
type C2DDelivery struct {
	MessageID string `json:"message_id"`
	Topic     string `json:"topic"`
	QoS       byte   `json:"qos"`
	Status    string `json:"status"` // C2DStatusDelivered
}

// C2DQueued is a message in a device's queue, as GET /api/devices/{id}/c2d
// lists it and as POST answers 202 when the device could not take it at once.
type C2DQueued struct {
	MessageID  string            `json:"message_id"`
	Status     string            `json:"status"`   // C2DStatusQueued or C2DStatusSent
	Position   int               `json:"position"` // 1 is delivered first
	Deliveries int               `json:"deliveries"`
	EnqueuedAt time.Time         `json:"enqueued_at"`
	ExpiresAt  time.Time         `json:"expires_at"`
	Topic      string            `json:"topic"`
	Body       string            `json:"body"`
	Properties map[string]string `json:"properties"`
	// Reason says, in a POST answer, why the message was not delivered at once.
	Reason string `json:"reason,omitempty"`
}

// C2DOutcome is what became of a message handed to the hub: exactly one of
// the two is set.
type C2DOutcome struct {
	Delivered *C2DDelivery
	Queued    *C2DQueued
}

// c2dEntry is one message in a queue.
type c2dEntry struct {
	msg        C2DMessage
	topic      string
	enqueued   time.Time
	expires    time.Time
	deliveries int // publishes made (counted as they start)
	// sentTo is the session the message was published to, awaiting its
	// PUBACK (attempt); nil while the message waits.
	sentTo  *hubSession
	attempt *mqttsrv.Delivery
	qos     byte
}

// c2dQueue is one device's queue.
type c2dQueue struct {
	// sending serialises deliveries, so that messages reach the wire in queue
	// order; it is held across publishes, mu only around the entries.
	sending sync.Mutex
	mu      sync.Mutex
	entries []*c2dEntry
}

// c2dQueue returns the device's queue, creating it.
func (h *hub) c2dQueue(key string) *c2dQueue {
	h.mu.Lock()
	defer h.mu.Unlock()
	q, ok := h.c2d[key]
	if !ok {
		q = &c2dQueue{}
		h.c2d[key] = q
	}
	return q
}

// dropExpired removes waiting messages whose time is up. A message in flight
// is left to its PUBACK or its connection's end. mu must be held.
func (q *c2dQueue) dropExpired(now time.Time, log *zap.Logger) {
	q.entries = slices.DeleteFunc(q.entries, func(e *c2dEntry) bool {
		expired := e.sentTo == nil && !now.Before(e.expires)
		if expired {
			log.Info("cloud-to-device message expired undelivered (IoT Hub dead-letters it)",
				zap.String("message_id", e.msg.MessageID), logDate("expired_at", e.expires), zap.Int("deliveries", e.deliveries))
		}
		return expired
	})
}

// view shows entry i. mu must be held.
func (q *c2dQueue) view(i int) C2DQueued {
	e := q.entries[i]
	v := C2DQueued{
		MessageID: e.msg.MessageID, Status: C2DStatusQueued, Position: i + 1, Deliveries: e.deliveries,
		EnqueuedAt: e.enqueued, ExpiresAt: e.expires, Topic: e.topic, Body: e.msg.Body, Properties: e.msg.Properties,
	}
	if e.sentTo != nil {
		v.Status = C2DStatusSent
	}
	if v.Properties == nil {
		v.Properties = map[string]string{}
	}
	return v
}

// remove takes e out of the queue; it reports whether e was still there (a
// purge may have taken it).
func (q *c2dQueue) remove(e *c2dEntry) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.entries, e)
	if i < 0 {
		return false
	}
	q.entries = slices.Delete(q.entries, i, i+1)
	return true
}

// SendC2D puts m in the device's queue and delivers it if the device is
// connected and subscribed, waiting up to c2dAckTimeout for its PUBACK. The
// outcome says whether the device has it or it waits; a full queue is
// ErrC2DQueueFull and a message breaking IoT Hub's rules ErrInvalidC2D.
func (h *hub) SendC2D(ctx context.Context, deviceID string, m C2DMessage) (C2DOutcome, error) {
	if err := m.Validate(); err != nil {
		return C2DOutcome{}, err
	}
	now := h.e.now()
	expires, err := c2dExpiry(m, now)
	if err != nil {
		return C2DOutcome{}, err
	}
	if m.MessageID == "" {
		m.MessageID = hubGUID()
	}
	key := hubKey(deviceID)
	log := h.log.With(zap.String("device_id", deviceID), zap.String("message_id", m.MessageID))
	e := &c2dEntry{msg: m, topic: c2dTopic(deviceID, m), enqueued: now.UTC(), expires: expires}
	q := h.c2dQueue(key)
	q.mu.Lock()
	q.dropExpired(now, h.log.With(zap.String("device_id", deviceID)))
	if n := len(q.entries); n >= c2dMaxQueued {
		q.mu.Unlock()
		log.Info("cloud-to-device message refused: the device's queue is full (403004)", zap.Int("queued", n))
		return C2DOutcome{}, fmt.Errorf("%w: device %s already has %d cloud-to-device messages waiting, IoT Hub's maximum per device; "+
			"connect the device to take them, wait for them to expire, or DELETE /api/devices/%s/c2d to purge them",
			ErrC2DQueueFull, deviceID, n, deviceID)
	}
	q.entries = append(q.entries, e)
	q.mu.Unlock()
	log.Info("cloud-to-device message queued", logDate("expires", expires), zap.Int("bytes", len(m.Body)))

	h.deliverC2D(key)

	q.mu.Lock()
	d, sentTo, qos := e.attempt, e.sentTo, e.qos
	q.mu.Unlock()
	if d == nil {
		return h.c2dQueuedOutcome(key, e, h.c2dNotSentReason(deviceID)), nil
	}
	t := time.NewTimer(c2dAckTimeout)
	defer t.Stop()
	select {
	case <-d.Done():
		if d.Err() != nil {
			h.requeueC2D(q, sentTo, e, d) // now, so that the answer shows it queued again
			return h.c2dQueuedOutcome(key, e, "the device disconnected before acknowledging the message; "+
				"it is delivered again when the device next connects and subscribes"), nil
		}
	case <-t.C:
		return h.c2dQueuedOutcome(key, e, fmt.Sprintf("no PUBACK within %s; the message stays in flight on this connection "+
			"and is delivered again if the connection ends first", c2dAckTimeout)), nil
	case <-ctx.Done():
		return C2DOutcome{}, fmt.Errorf("send to %s: %w (the message stays queued)", deviceID, ctx.Err())
	case <-h.ctx.Done():
		return h.c2dQueuedOutcome(key, e, "the emulator is closing"), nil
	}
	return C2DOutcome{Delivered: &C2DDelivery{MessageID: m.MessageID, Topic: e.topic, QoS: qos, Status: C2DStatusDelivered}}, nil
}

// c2dNotSentReason says why a message just queued was not published.
func (h *hub) c2dNotSentReason(deviceID string) string {
	s := h.session(deviceID)
	switch {
	case s == nil:
		return "the device is not connected; the message is delivered when it connects and subscribes to devices/" +
			deviceID + "/messages/devicebound/#"
	case !s.c2dSubscribed():
		return "the device is connected but not subscribed to devices/" + s.deviceID + "/messages/devicebound/#; " +
			"the message is delivered when it subscribes"
	}
	return "the device's connection ended before the message could be sent; it is delivered on the next one"
}

// c2dQueuedOutcome shows e as it stands in the queue now, with reason. A
// message that left the queue meanwhile (a purge, or a PUBACK just after the
// wait gave up) is shown at position 0.
func (h *hub) c2dQueuedOutcome(key string, e *c2dEntry, reason string) C2DOutcome {
	q := h.c2dQueue(key)
	q.mu.Lock()
	defer q.mu.Unlock()
	var v C2DQueued
	if i := slices.Index(q.entries, e); i >= 0 {
		v = q.view(i)
	} else {
		v = C2DQueued{MessageID: e.msg.MessageID, Status: C2DStatusQueued, Deliveries: e.deliveries, EnqueuedAt: e.enqueued,
			ExpiresAt: e.expires, Topic: e.topic, Body: e.msg.Body, Properties: e.msg.Properties}
		if v.Properties == nil {
			v.Properties = map[string]string{}
		}
	}
	v.Reason = reason
	return C2DOutcome{Queued: &v}
}

// C2DQueue lists the device's waiting messages, oldest first.
func (h *hub) C2DQueue(deviceID string) []C2DQueued {
	q := h.c2dQueue(hubKey(deviceID))
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropExpired(h.e.now(), h.log.With(zap.String("device_id", deviceID)))
	out := make([]C2DQueued, len(q.entries))
	for i := range q.entries {
		out[i] = q.view(i)
	}
	return out
}

// PurgeC2D empties the device's queue, as IoT Hub's purge queue API does,
// and returns how many messages it removed. A PUBACK for a purged message
// that was in flight changes nothing.
func (h *hub) PurgeC2D(deviceID string) int {
	q := h.c2dQueue(hubKey(deviceID))
	q.mu.Lock()
	n := len(q.entries)
	q.entries = nil
	q.mu.Unlock()
	h.log.Info("cloud-to-device queue purged", zap.String("device_id", deviceID), zap.Int("messages", n))
	return n
}

// deliverC2D publishes the device's waiting messages, oldest first, to its
// current connection if that connection is subscribed to them. A publish that
// fails (the connection is ending, or not yet acknowledged) puts that message
// and the rest back: the next connection's CONNACK or SUBACK delivers them.
func (h *hub) deliverC2D(key string) {
	q := h.c2dQueue(key)
	q.sending.Lock()
	defer q.sending.Unlock()
	s := h.session(key)
	if s == nil {
		return
	}
	qos, ok := s.c2dQoS()
	if !ok {
		return
	}
	q.mu.Lock()
	q.dropExpired(h.e.now(), s.log)
	var batch []*c2dEntry
	for _, e := range q.entries {
		if e.sentTo == nil {
			// Counted before the publish: the device may have the message,
			// and the admin API be asked about it, before Publish returns.
			e.sentTo, e.attempt, e.qos = s, nil, qos
			e.deliveries++
			batch = append(batch, e)
		}
	}
	q.mu.Unlock()
	for i, e := range batch {
		d, err := s.conn.Publish(e.topic, []byte(e.msg.Body), qos)
		if err != nil {
			s.log.Info("cloud-to-device messages not sent: the connection cannot take them", zap.Int("messages", len(batch)-i), zap.Error(err))
			q.mu.Lock()
			for _, back := range batch[i:] {
				if back.sentTo == s && back.attempt == nil {
					back.sentTo = nil
					back.deliveries-- // it never reached the wire
				}
			}
			q.mu.Unlock()
			return
		}
		q.mu.Lock()
		e.attempt = d
		q.mu.Unlock()
		s.log.Info("cloud-to-device message sent", zap.String("message_id", e.msg.MessageID), zap.Uint8("qos", qos),
			zap.Int("delivery", e.deliveries), zap.Int("bytes", len(e.msg.Body)))
		h.background(func() { h.settleC2D(q, s, e, d) })
	}
}

// settleC2D waits for the outcome of one publish: the PUBACK completes the
// message; a connection that ended first puts it back in the queue and tries
// the device's current connection, in case a newer one is already subscribed.
func (h *hub) settleC2D(q *c2dQueue, s *hubSession, e *c2dEntry, d *mqttsrv.Delivery) {
	select {
	case <-d.Done():
	case <-h.ctx.Done():
		return
	}
	if d.Err() == nil {
		if q.remove(e) {
			s.log.Info("cloud-to-device message completed by the device's PUBACK", zap.String("message_id", e.msg.MessageID))
		}
		return
	}
	h.requeueC2D(q, s, e, d)
	h.deliverC2D(s.key)
}

// requeueC2D puts e back in the queue after its publish d to s failed,
// unless that already happened.
func (h *hub) requeueC2D(q *c2dQueue, s *hubSession, e *c2dEntry, d *mqttsrv.Delivery) {
	q.mu.Lock()
	back := e.attempt == d
	if back {
		e.sentTo, e.attempt = nil, nil
	}
	q.mu.Unlock()
	if back {
		s.log.Info("cloud-to-device message not acknowledged before the connection ended; it goes back to the queue",
			zap.String("message_id", e.msg.MessageID), zap.Error(d.Err()))
	}
}

// c2dFilter reports whether filter is a subscription to the device's
// cloud-to-device messages.
func (s *hubSession) c2dFilter(filter string) bool {
	return filter == "devices/"+s.deviceID+"/messages/devicebound/#" || filter == hubFilterC2DAnyDevice
}

// c2dQoS is the QoS the device's C2D subscription was granted, the higher
// of its two forms; ok is false when it has neither.
func (s *hubSession) c2dQoS() (qos byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, q := range s.subs {
		if s.c2dFilter(f) {
			qos, ok = max(qos, q), true
		}
	}
	return qos, ok
}

func (s *hubSession) c2dSubscribed() bool {
	_, ok := s.c2dQoS()
	return ok
}

// Started delivers the queue to a device whose kept session (CleanSession 0)
// is still subscribed to it, now that it has its CONNACK (mqttsrv.Starter).
func (s *hubSession) Started() {
	if s.c2dSubscribed() {
		s.h.background(func() { s.h.deliverC2D(s.key) })
	}
}

// Subscribed delivers the queue once the SUBACK of a C2D subscription is on
// the wire (mqttsrv.SubscribeObserver).
func (s *hubSession) Subscribed(granted []mqttsrv.Subscription) {
	if slices.ContainsFunc(granted, func(g mqttsrv.Subscription) bool { return s.c2dFilter(g.Filter) }) {
		s.h.background(func() { s.h.deliverC2D(s.key) })
	}
}
