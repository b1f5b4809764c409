package emulator

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Cloud-to-device messages (reference §2.2 "C2D"). The admin API hands the hub
// a message for a device; the hub keeps it in the device's queue
// (c2d_queue.go) and publishes it on devices/{id}/messages/devicebound/{property
// bag} to the device's current connection once that connection is subscribed
// to devices/{id}/messages/devicebound/# (or to azure-sdk-for-c's
// devices/+/messages/devicebound/#), at the QoS the subscription was granted.
// This file holds the message itself: its rules, its expiry and its topic.

// C2DMessage is a cloud-to-device message as POST /api/devices/{id}/c2d takes it.
type C2DMessage struct {
	Body string `json:"body"`
	// Properties are the application properties, and the system properties
	// the service lets a sender set ($.cid, $.ct, $.ce, $.uid, $.exp).
	Properties map[string]string `json:"properties"`
	// MessageID becomes $.mid; empty gives a GUID, as the service SDKs do.
	MessageID string `json:"message_id"`
}

// c2dMaxBody is IoT Hub's cloud-to-device message size limit ([DOC-HUB-LIMITS]).
const c2dMaxBody = 64 << 10

// How long a message waits for its device. The C2D guide (c2d_queue.go lists
// the sources), "Cloud-to-device configuration options": a message expires at
// the ExpiryTimeUtc its sender set, else after the hub's defaultTtlAsIso8601,
// which is one hour unless configured (one minute to two days); and
// [DOC-HUB-LIMITS] caps a cloud-to-device message's TTL at two days. Azure
// does not document what the service does with an ExpiryTimeUtc more than two
// days ahead; the emulator refuses it, the way it refuses a message over the
// size limit, rather than quietly keeping it shorter than its sender asked.
const (
	c2dDefaultTTL = time.Hour
	c2dMaxTTL     = 48 * time.Hour
)

// c2dExpiryProperty is ExpiryTimeUtc as the MQTT property bag names it: the
// device SDKs map "$.exp" to the message's expiry time (C#'s
// IotHubWirePropertyNames.AbsoluteExpiryTime, Node's expiryTimeUtc, which it
// writes with Date.toISOString), so a sender sets it as an RFC 3339 time.
const c2dExpiryProperty = "$.exp"

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

// c2dExpiry is when m leaves its queue undelivered: its $.exp, or the
// default time to live from now. An $.exp that is not an RFC 3339 time, is
// not in the future, or is more than the two days IoT Hub keeps a message
// ahead is ErrInvalidC2D.
func c2dExpiry(m C2DMessage, now time.Time) (time.Time, error) {
	v, ok := m.Properties[c2dExpiryProperty]
	if !ok {
		return now.Add(c2dDefaultTTL).UTC(), nil
	}
	exp, err := time.Parse(time.RFC3339, v)
	switch {
	case err != nil:
		return time.Time{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time such as %s", ErrInvalidC2D,
			c2dExpiryProperty, v, now.Add(c2dDefaultTTL).UTC().Format(time.RFC3339))
	case !exp.After(now):
		return time.Time{}, fmt.Errorf("%w: %s %s has passed (it is %s now)", ErrInvalidC2D,
			c2dExpiryProperty, v, now.UTC().Format(time.RFC3339))
	case exp.Sub(now) > c2dMaxTTL:
		return time.Time{}, fmt.Errorf("%w: %s %s is more than %s away: IoT Hub keeps a cloud-to-device message at most two days",
			ErrInvalidC2D, c2dExpiryProperty, v, c2dMaxTTL)
	}
	return exp.UTC(), nil
}

func c2dPrintable(s string, spaces bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > '~' || c < ' ' || (c == ' ' && !spaces) {
			return false
		}
	}
	return true
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
