package emulator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// hubSession is one accepted device connection (mqttsrv.Session). The server
// calls its Session methods one at a time; other goroutines (direct methods,
// desired pushes, credential answers) read its subscriptions, hence mu.
type hubSession struct {
	h        *hub
	conn     *mqttsrv.Conn
	ctx      context.Context // ends with the connection
	key      string          // hubKey(deviceID)
	deviceID string
	id       *hubIdentity
	log      *zap.Logger
	will     *mqttsrv.Message
	clean    bool // CleanSession: nothing outlives the connection
	present  bool // a CleanSession 0 session was restored

	mu   sync.Mutex
	subs map[string]byte // filter -> granted QoS
}

// open makes the connection the device's current one: the previous one, if
// any, is closed (IoT Hub allows one connection per device; the old one ends
// with 400027 ConnectionForcefullyClosedOnNewConnection), the session is
// restored or discarded as CleanSession says, and the State records the
// connection. h.mu makes that atomic with Closed, so a closing predecessor
// never marks its successor's device disconnected.
func (h *hub) open(ctx context.Context, req *mqttsrv.ConnectRequest, id *hubIdentity) *hubSession {
	key := hubKey(req.ClientID)
	s := &hubSession{
		h: h, conn: req.Conn, ctx: ctx, key: key, deviceID: req.ClientID, id: id,
		log:   h.log.With(zap.String("device_id", req.ClientID)),
		will:  req.Will,
		clean: req.CleanSession,
		subs:  map[string]byte{},
	}
	now := h.e.now()
	h.mu.Lock()
	switch stored, ok := h.persisted[key]; {
	case req.CleanSession:
		delete(h.persisted, key)
	case ok:
		s.subs, s.present = maps.Clone(stored), true
	default:
		h.persisted[key] = map[string]byte{}
	}
	if prev := h.conns.Register(key, req.Conn); prev != nil && prev != req.Conn {
		s.log.Info("new connection replaces the device's previous one (400027)", zap.Stringer("previous_remote", prev.RemoteAddr()))
	}
	h.sessions[key] = s
	h.e.state.WithDevice(key, func(d *Device) {
		d.Connected, d.ConnectedSince, d.AuthMethod = true, &now, id.authMethod
		if id.leaf != nil {
			d.Certificate = NewCertificateInfo(id.leaf)
		}
	})
	h.mu.Unlock()
	if id.authMethod == hubAuthSAS {
		h.background(func() { s.expireSAS(id.sasExpiry) })
	}
	return s
}

// expireSAS disconnects the device when its token expires, as IoT Hub does
// over MQTT (401003 IoTHubUnauthorized, reference §2.1 "SAS expiry"); the
// device must reconnect with a fresh token. A token accepted within the
// clock-skew allowance lasts until the allowance ends.
func (s *hubSession) expireSAS(expiry time.Time) {
	now := s.h.e.now()
	deadline := expiry
	if !deadline.After(now) {
		deadline = expiry.Add(sas.ClockSkew)
	}
	if !s.h.sleep(s.ctx, deadline.Sub(now)) {
		return
	}
	s.log.Info("SAS token expired; disconnecting the device (401003 IoTHubUnauthorized)", logDate("expiry", expiry))
	s.conn.Close(fmt.Errorf("401003 IoTHubUnauthorized: SAS token expired at %s", expiry.UTC().Format(time.RFC3339)))
}

// SessionPresent tells a CleanSession 0 device whether its subscriptions
// were kept (mqttsrv.SessionPresenter).
func (s *hubSession) SessionPresent() bool { return s.present }

// Subscribe grants the filters IoT Hub serves, at QoS 0 or 1, up to five at a
// time; the rest get 0x80.
func (s *hubSession) Subscribe(filters []mqttsrv.Subscription) []byte {
	codes := make([]byte, len(filters))
	s.mu.Lock()
	for i, f := range filters {
		_, have := s.subs[f.Filter]
		switch {
		case !hubFilterAllowed(f.Filter, s.deviceID):
			codes[i] = 0x80
			s.log.Info("subscription refused: IoT Hub serves no such topic", zap.String("filter", f.Filter))
		case !have && len(s.subs) >= hubMaxSubscriptions:
			codes[i] = 0x80
			s.log.Info("subscription refused: a device may subscribe to at most 5 topics", zap.String("filter", f.Filter),
				zap.Strings("subscribed", slices.Sorted(maps.Keys(s.subs))))
		default:
			codes[i] = min(f.QoS, 1)
			s.subs[f.Filter] = codes[i]
			s.log.Info("subscribed", zap.String("filter", f.Filter), zap.Uint8("granted_qos", codes[i]))
		}
	}
	snapshot := maps.Clone(s.subs)
	s.mu.Unlock()
	s.persist(snapshot)
	return codes
}

// Unsubscribe drops filters (mqttsrv.Unsubscriber).
func (s *hubSession) Unsubscribe(filters []string) {
	s.mu.Lock()
	for _, f := range filters {
		delete(s.subs, f)
	}
	snapshot := maps.Clone(s.subs)
	s.mu.Unlock()
	s.log.Info("unsubscribed", zap.Strings("filters", filters))
	s.persist(snapshot)
}

// persist keeps a CleanSession 0 device's subscriptions for its next
// connection, unless a newer connection has taken over.
func (s *hubSession) persist(subs map[string]byte) {
	if s.clean {
		return
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.h.sessions[s.key] == s {
		s.h.persisted[s.key] = subs
	}
}

// subscribed reports whether the device receives messages on filter now.
func (s *hubSession) subscribed(filter string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subs[filter]
	return ok
}

func (s *hubSession) filters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.subs))
}

// Publish serves one message from the device. An error closes the
// connection, which is what IoT Hub does with a QoS 2 message, a topic it
// does not serve, or telemetry for another device.
func (s *hubSession) Publish(ctx context.Context, m *mqttsrv.Message) error {
	if m.QoS == 2 {
		s.log.Info("closing the connection: IoT Hub does not support QoS 2", zap.String("topic", m.Topic))
		return fmt.Errorf("QoS 2 PUBLISH to %q: IoT Hub supports QoS 0 and 1 only", m.Topic)
	}
	req, err := parseHubTopic(m.Topic)
	if err != nil {
		s.log.Info("closing the connection: unsupported publish", zap.Error(err))
		return err
	}
	switch req.kind {
	case hubTelemetry:
		return s.telemetry(ctx, req, m)
	case hubTwinGet:
		return s.twinGet(req)
	case hubTwinPatchReported:
		return s.twinPatchReported(req, m.Payload)
	case hubMethodResponse:
		s.methodResponse(req, m.Payload)
		return nil
	case hubIssueCertificate:
		return s.issueCertificate(req, m.Payload)
	}
	return fmt.Errorf("%w: %q", errHubTopic, m.Topic) // unreachable: parseHubTopic classifies or fails
}

// telemetry stores a device-to-cloud message. MQTT 3.1.1 has no negative
// acknowledgement, so an injected throttle or error closes the connection,
// as IoT Hub does with a device it cannot serve. Match passes over faults
// with nothing to spoil here (malformed_json, hostile), leaving them for a
// twin request.
func (s *hubSession) telemetry(ctx context.Context, req hubRequest, m *mqttsrv.Message) error {
	if req.deviceID != s.deviceID {
		s.log.Info("closing the connection: telemetry for another device", zap.String("topic_device_id", req.deviceID))
		return fmt.Errorf("telemetry topic names device %q on %q's connection", req.deviceID, s.deviceID)
	}
	if f, ok := s.h.e.faults.Match(EndpointHub, s.deviceID, OpTelemetry); ok {
		switch f.Action {
		case ActionDrop, ActionThrottle, ActionError:
			s.log.Info("closing the connection (injected fault)", zap.Int("fault", f.ID), zap.String("action", f.Action))
			return fmt.Errorf("injected fault %d: %s on telemetry", f.ID, f.Action)
		case ActionDelay:
			// Holding the message delays its PUBACK, as a slow hub would.
			if !s.h.sleep(ctx, f.DelayDuration()) {
				return fmt.Errorf("telemetry delayed by injected fault %d: %w", f.ID, context.Cause(ctx))
			}
		}
	}
	props := req.properties
	if m.Retain {
		props["mqtt-retain"] = "true" // IoT Hub keeps no retained messages; it passes the flag on
	}
	s.h.storeTelemetry(s.key, TelemetryMessage{At: s.h.e.now().UTC(), Body: string(m.Payload), Properties: props})
	s.log.Debug("telemetry received", zap.Int("bytes", len(m.Payload)), zap.Int("properties", len(props)))
	return nil
}

// storeTelemetry keeps the newest maxTelemetryKept messages. Re-slicing
// instead of shifting keeps an append O(1); the slice is reallocated (and the
// dropped messages freed) whenever append outgrows it.
func (h *hub) storeTelemetry(key string, m TelemetryMessage) {
	h.e.state.WithDevice(key, func(d *Device) {
		d.Telemetry = append(d.Telemetry, m)
		if n := len(d.Telemetry); n > maxTelemetryKept {
			d.Telemetry = d.Telemetry[n-maxTelemetryKept:]
		}
	})
}

// Closed ends the session: the State shows the device disconnected unless a
// newer connection has replaced this one, and a will message becomes
// telemetry with iothub-MessageType=Will (reference §2.2 "Will").
func (s *hubSession) Closed(reason error) {
	h := s.h
	h.mu.Lock()
	current := h.conns.Unregister(s.key, s.conn)
	if current {
		delete(h.sessions, s.key)
		h.e.state.WithDevice(s.key, func(d *Device) { d.Connected, d.ConnectedSince = false, nil })
	}
	h.mu.Unlock()
	s.publishWill(reason)
	s.log.Info("device disconnected", zap.NamedError("reason", reason), zap.Bool("replaced", !current))
}

func (s *hubSession) publishWill(reason error) {
	if s.will == nil || errors.Is(reason, mqttsrv.ErrClientDisconnected) || errors.Is(reason, mqttsrv.ErrServerClosed) {
		return
	}
	req, err := parseHubTopic(s.will.Topic)
	if err != nil || req.kind != hubTelemetry || req.deviceID != s.deviceID {
		s.log.Info("will message dropped: its topic is not this device's telemetry", zap.String("topic", s.will.Topic))
		return
	}
	req.properties["iothub-MessageType"] = "Will"
	s.h.storeTelemetry(s.key, TelemetryMessage{At: s.h.e.now().UTC(), Body: string(s.will.Payload), Properties: req.properties})
	s.log.Info("will message forwarded as telemetry")
}
