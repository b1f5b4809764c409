package emulator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Cloud-to-device messages (reference §2.2 "C2D"). The admin API hands the hub
// a message for a device; the hub publishes it on
// devices/{id}/messages/devicebound/{property bag} to the device's current
// connection, if that connection subscribed to devices/{id}/messages/devicebound/#
// (or to azure-sdk-for-c's devices/+/messages/devicebound/#), at the QoS the
// subscription was granted.
//
// IoT Hub also queues messages for devices that are offline; the emulator does
// not: a device that is not connected and subscribed is reported as such.

// C2DMessage is a cloud-to-device message as POST /api/devices/{id}/c2d takes it.
type C2DMessage struct {
	Body string `json:"body"`
	// Properties are the application properties, and the system properties
	// the service lets a sender set ($.cid, $.ct, $.ce, $.uid, $.exp).
	Properties map[string]string `json:"properties"`
	// MessageID becomes $.mid; empty gives a GUID, as the service SDKs do.
	MessageID string `json:"message_id"`
}

// C2DDelivery says how a message reached the device.
type C2DDelivery struct {
	MessageID string `json:"message_id"`
	Topic     string `json:"topic"`
	QoS       byte   `json:"qos"`
}

// c2dMaxBody is IoT Hub's cloud-to-device message size limit ([DOC-HUB-LIMITS]).
const c2dMaxBody = 64 << 10

// c2dAckTimeout bounds the wait for the device's PUBACK.
const c2dAckTimeout = 30 * time.Second

// c2dSettableSystemProperties are the system properties a sender may set;
// $.mid comes from MessageID and $.to is the service's.
var c2dSettableSystemProperties = []string{"$.cid", "$.ct", "$.ce", "$.uid", "$.exp"}

// ErrInvalidC2D: the message breaks IoT Hub's rules (the admin API answers 400).
var ErrInvalidC2D = errors.New("invalid cloud-to-device message")

// Validate applies IoT Hub's limits to a message: the body size, the message
// ID's form (at most 128 printable ASCII characters) and property names and
// values (printable ASCII; of the $-names only the settable system ones).
func (m *C2DMessage) Validate() error {
	if len(m.Body) > c2dMaxBody {
		return fmt.Errorf("%w: body of %d bytes, IoT Hub takes at most %d", ErrInvalidC2D, len(m.Body), c2dMaxBody)
	}
	if len(m.MessageID) > 128 || !c2dPrintable(m.MessageID, false) {
		return fmt.Errorf("%w: message_id %q: use up to 128 printable ASCII characters without spaces", ErrInvalidC2D, m.MessageID)
	}
	for k, v := range m.Properties {
		switch {
		case k == "" || !c2dPrintable(k, false):
			return fmt.Errorf("%w: property name %q: use printable ASCII without spaces", ErrInvalidC2D, k)
		case strings.HasPrefix(k, "$") && !slices.Contains(c2dSettableSystemProperties, k):
			return fmt.Errorf("%w: property %q: of the system properties a sender sets only %s (message_id gives $.mid)",
				ErrInvalidC2D, k, strings.Join(c2dSettableSystemProperties, ", "))
		case !c2dPrintable(v, true):
			return fmt.Errorf("%w: property %q: its value must be printable ASCII", ErrInvalidC2D, k)
		}
	}
	return nil
}

func c2dPrintable(s string, spaces bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > '~' || c < ' ' || (c == ' ' && !spaces) {
			return false
		}
	}
	return true
}

// SendC2D publishes m to the device and waits until it is delivered: the
// device's PUBACK at QoS 1, the write at QoS 0. A device that is not
// connected, not subscribed, or gone before acknowledging gives
// ErrDeviceNotConnected.
func (h *hub) SendC2D(ctx context.Context, deviceID string, m C2DMessage) (C2DDelivery, error) {
	if err := m.Validate(); err != nil {
		return C2DDelivery{}, err
	}
	s := h.session(deviceID)
	if s == nil {
		return C2DDelivery{}, fmt.Errorf("send to %s: %w", deviceID, ErrDeviceNotConnected)
	}
	qos, ok := s.c2dQoS()
	if !ok {
		return C2DDelivery{}, fmt.Errorf("send to %s: %w: not subscribed to devices/%s/messages/devicebound/#",
			deviceID, ErrDeviceNotConnected, deviceID)
	}
	if m.MessageID == "" {
		m.MessageID = hubGUID()
	}
	out := C2DDelivery{MessageID: m.MessageID, Topic: c2dTopic(s.deviceID, m), QoS: qos}
	d, err := s.conn.Publish(out.Topic, []byte(m.Body), qos)
	if err != nil {
		return C2DDelivery{}, fmt.Errorf("send to %s: %w: %w", deviceID, ErrDeviceNotConnected, err)
	}
	t := time.NewTimer(c2dAckTimeout)
	defer t.Stop()
	select {
	case <-d.Done():
		if err := d.Err(); err != nil {
			return C2DDelivery{}, fmt.Errorf("send to %s: %w: disconnected before acknowledging: %w", deviceID, ErrDeviceNotConnected, err)
		}
	case <-t.C:
		return C2DDelivery{}, fmt.Errorf("send to %s: no PUBACK within %s: %w", deviceID, c2dAckTimeout, context.DeadlineExceeded)
	case <-ctx.Done():
		return C2DDelivery{}, fmt.Errorf("send to %s: %w", deviceID, ctx.Err())
	case <-h.ctx.Done():
		return C2DDelivery{}, fmt.Errorf("send to %s: %w: the emulator is closing", deviceID, ErrDeviceNotConnected)
	}
	s.log.Info("cloud-to-device message delivered", zap.String("message_id", out.MessageID), zap.Uint8("qos", qos),
		zap.Int("bytes", len(m.Body)), zap.Int("properties", len(m.Properties)))
	return out, nil
}

// c2dQoS is the QoS the device's C2D subscription was granted, the higher
// of its two forms; ok is false when it has neither.
func (s *hubSession) c2dQoS() (qos byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range []string{"devices/" + s.deviceID + "/messages/devicebound/#", hubFilterC2DAnyDevice} {
		if q, have := s.subs[f]; have {
			qos, ok = max(qos, q), true
		}
	}
	return qos, ok
}

// c2dTopic is devices/{id}/messages/devicebound/ and the property bag: $.mid
// and $.to first, then the message's properties by name. Names and values are
// percent-encoded as IoT Hub sends them, "$" included ("%24.mid"), because
// azure-sdk-for-c matches the encoded names without decoding them and a topic
// name cannot carry '+' or '#'.
func c2dTopic(deviceID string, m C2DMessage) string {
	var b strings.Builder
	b.WriteString("devices/" + deviceID + "/messages/devicebound/")
	b.WriteString(c2dEscape("$.mid") + "=" + c2dEscape(m.MessageID))
	b.WriteString("&" + c2dEscape("$.to") + "=" + c2dEscape("/devices/"+deviceID+"/messages/deviceBound"))
	for _, k := range slices.Sorted(maps.Keys(m.Properties)) {
		b.WriteString("&" + c2dEscape(k) + "=" + c2dEscape(m.Properties[k]))
	}
	return b.String()
}

// c2dEscape percent-encodes every byte but the unreserved ones of RFC 3986.
func c2dEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
